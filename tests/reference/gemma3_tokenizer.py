"""Gemma 3's tokenizer rebuilt from a GGUF file with Google's SentencePiece: the reference for
bitlight's tokenizer on gemma3 files.

The GGUF keeps the SentencePiece model's pieces, scores and types (tokenizer.ggml.*: a BPE model
with byte fallback, identity normalization, no dummy prefix), so a ModelProto made of them
encodes as the original tokenizer.model does. convert_hf_to_gguf also stores tokenizer.json's
added tokens as USER_DEFINED pieces with their raw text ("\\n", "  ", "<h1>"...), which Hugging
Face's tokenizer (and llama.cpp) match in the raw text before the model sees it, leftmost and
longest first; SentencePiece would look for them in the normalized text ("▁" for " "), so that
split is done here first, as `tokenizers` does it for added tokens. Control tokens
("<start_of_turn>") are split out the same way only when special tokens are parsed.
"""

SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED = 1, 2, 3, 4


def _strings(reader, name):
    f = reader.fields[name]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def _numbers(reader, name):
    f = reader.fields[name]
    return [f.parts[i][0].item() for i in f.data]


class Gemma3Tokenizer:
    def __init__(self, path):
        import sentencepiece
        from gguf import GGUFReader
        from sentencepiece import sentencepiece_model_pb2 as pb

        r = GGUFReader(str(path))
        tokens = _strings(r, "tokenizer.ggml.tokens")
        scores = _numbers(r, "tokenizer.ggml.scores")
        types = _numbers(r, "tokenizer.ggml.token_type")
        unk = _numbers(r, "tokenizer.ggml.unknown_token_id")[0]
        self.bos = _numbers(r, "tokenizer.ggml.bos_token_id")[0]
        m = pb.ModelProto()
        m.trainer_spec.model_type = pb.TrainerSpec.BPE
        m.trainer_spec.vocab_size = len(tokens)
        m.trainer_spec.byte_fallback = True
        m.trainer_spec.unk_id = unk
        m.trainer_spec.bos_id = self.bos
        m.trainer_spec.eos_id = _numbers(r, "tokenizer.ggml.eos_token_id")[0]
        m.trainer_spec.pad_id = _numbers(r, "tokenizer.ggml.padding_token_id")[0]
        m.normalizer_spec.name = "identity"
        m.normalizer_spec.add_dummy_prefix = False
        m.normalizer_spec.remove_extra_whitespaces = False
        m.normalizer_spec.escape_whitespaces = True
        for i, (t, s, ty) in enumerate(zip(tokens, scores, types)):
            piece = m.pieces.add()
            piece.piece, piece.score = t, s
            # The GGUF marks <unk> as a control token; SentencePiece wants its unk_id UNKNOWN.
            piece.type = SPM_UNKNOWN if i == unk else ty
        self.spm = sentencepiece.SentencePieceProcessor(model_proto=m.SerializeToString())
        self.user_defined = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == SPM_USER_DEFINED}
        self.control = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == SPM_CONTROL}

    def encode(self, text, special=False, bos=True):
        """Token ids of text: BOS (with bos), then the added tokens split out and the rest encoded
        by SentencePiece."""
        atomic = dict(self.user_defined, **self.control) if special else self.user_defined
        longest = max(map(len, atomic))
        ids = [self.bos] if bos else []
        start = i = 0
        while i < len(text):
            match = next((text[i:i + n] for n in range(min(longest, len(text) - i), 0, -1) if text[i:i + n] in atomic),
                         None)
            if match is None:
                i += 1
                continue
            ids += self.spm.encode(text[start:i]) if i > start else []
            ids.append(atomic[match])
            i += len(match)
            start = i
        ids += self.spm.encode(text[start:]) if start < len(text) else []
        return ids
