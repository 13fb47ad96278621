"""Gemma 3 (text) in numpy, reading a GGUF file: the independent reference for bitlight's gemma3.

Written from Hugging Face transformers' modeling_gemma3.py (v4.52.4: Gemma3TextScaledWordEmbedding,
Gemma3RMSNorm, Gemma3Attention, Gemma3MLP, Gemma3DecoderLayer), because transformers' own Gemma 3
needs torch >= 2.0 and the test venv runs Debian's torch 1.13 (scripts/requirements-test.txt).
Weights are dequantized by gguf-py (gguf.quants.dequantize); activations are float64, the output
matrix (the 262144-row embedding table) float32.

What it follows from HF, line by line:
  - embeddings scaled by sqrt(hidden_size);
  - RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + w); GGUF files store 1 + w (convert_hf_to_gguf adds
    the 1), so the file's weight multiplies directly;
  - q and k normed per head (q_norm, k_norm) before the rope; the rope rotates halves
    (rotate_half), base rope_local_base_freq = 10000 on sliding layers, rope_theta on the others;
  - layer i slides when (i + 1) % sliding_window_pattern != 0 (pattern 6): a query at position p
    sees keys at positions p - sliding_window < j <= p;
  - scores scaled by query_pre_attn_scalar ** -0.5 (= head_dim except Gemma 3 27B, whose 168 is
    hidden_size / num_attention_heads; told by its 62 layers, as llama.cpp does);
  - post_attention_layernorm and post_feedforward_layernorm on each sub-block's output before the
    residual add; MLP down(gelu_tanh(gate(x)) * up(x)); no final logit soft-capping (Gemma 3 has none).
"""
import numpy as np

SLIDING_WINDOW_PATTERN = 6
ROPE_LOCAL_BASE = 10000.0
LAYERS_27B = 62


def _field(reader, name, default=None):
    f = reader.fields.get(name)
    if f is None:
        if default is None:
            raise KeyError(name)
        return default
    return f.parts[f.data[0]].tolist()[0]


def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _rope_neox(x, positions, base, scale):
    """x [n, heads, hd]: HF's apply_rotary_pos_emb with rotate_half."""
    hd = x.shape[-1]
    inv_freq = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    angles = (positions.astype(np.float64) * scale)[:, None] * inv_freq[None, :]  # [n, hd / 2]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[:, None, :]
    rotated = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1)
    return x * cos + rotated * sin


class Gemma3Numpy:
    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        r = GGUFReader(str(path))
        p = "gemma3."
        self.n_layer = _field(r, p + "block_count")
        self.n_embd = _field(r, p + "embedding_length")
        self.n_head = _field(r, p + "attention.head_count")
        self.n_head_kv = _field(r, p + "attention.head_count_kv")
        self.head_dim = _field(r, p + "attention.key_length")
        self.eps = _field(r, p + "attention.layer_norm_rms_epsilon")
        self.rope_base = _field(r, p + "rope.freq_base")
        self.window = _field(r, p + "attention.sliding_window")
        factor = _field(r, p + "rope.scaling.factor", 1.0)
        self.rope_scale = 1.0 / factor
        query_pre_attn_scalar = (self.n_embd / self.n_head if self.n_layer == LAYERS_27B else self.head_dim)
        self.attn_scale = query_pre_attn_scalar ** -0.5

        def weight(name, dtype=np.float64):
            t = next(t for t in r.tensors if t.name == name)
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=dtype).reshape(
                [int(d) for d in reversed(t.shape.tolist())])

        self.embd = weight("token_embd.weight", np.float32)  # [n_vocab, n_embd], also the output
        self.output_norm = weight("output_norm.weight")
        names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_q_norm", "attn_k_norm", "attn_output",
                 "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"]
        self.layers = [{n: weight(f"blk.{i}.{n}.weight") for n in names} for i in range(self.n_layer)]

    def is_sliding(self, layer):
        return (layer + 1) % SLIDING_WINDOW_PATTERN != 0

    def logits(self, ids, window=None):
        """float32 [len(ids), n_vocab] at positions 0..n-1; window overrides the file's (tests)."""
        return self._forward(ids, self._empty_cache(), window, last_only=False)

    def greedy(self, ids, n_tokens, window=None, eos=None):
        """Up to n_tokens greedy continuation ids of ids, decoded one token at a time over a KV
        cache as an engine does (the prompt in one pass); stops before eos when given."""
        cache = self._empty_cache()
        out = []
        logits = self._forward(ids, cache, window, last_only=True)
        while len(out) < n_tokens:
            token = int(np.argmax(logits[-1]))
            if token == eos:
                break
            out.append(token)
            logits = self._forward([token], cache, window, last_only=True)
        return out

    def _empty_cache(self):
        """Per layer the rotated k and the v of every position so far: [pos, n_head_kv, head_dim]."""
        empty = np.zeros((0, self.n_head_kv, self.head_dim))
        return [[empty, empty] for _ in range(self.n_layer)]

    def _forward(self, ids, cache, window, last_only):
        """Runs ids at the positions after those in cache (extending it); float32 logits of each
        of them, or of the last one only."""
        window = self.window if window is None else window
        n, past = len(ids), cache[0][0].shape[0]
        pos = np.arange(past, past + n)
        keys = np.arange(past + n)
        causal = keys[None, :] <= pos[:, None]
        in_window = pos[:, None] - keys[None, :] < window
        x = self.embd[np.asarray(ids)].astype(np.float64) * np.sqrt(np.float32(self.n_embd))
        group = self.n_head // self.n_head_kv
        for i, l in enumerate(self.layers):
            h = _rms_norm(x, l["attn_norm"], self.eps)
            q = (h @ l["attn_q"].T).reshape(n, self.n_head, self.head_dim)
            k = (h @ l["attn_k"].T).reshape(n, self.n_head_kv, self.head_dim)
            v = (h @ l["attn_v"].T).reshape(n, self.n_head_kv, self.head_dim)
            q = _rms_norm(q, l["attn_q_norm"], self.eps)
            k = _rms_norm(k, l["attn_k_norm"], self.eps)
            sliding = self.is_sliding(i)
            base, scale = (ROPE_LOCAL_BASE, 1.0) if sliding else (self.rope_base, self.rope_scale)
            q, k = _rope_neox(q, pos, base, scale), _rope_neox(k, pos, base, scale)
            cache[i][0] = k_all = np.concatenate([cache[i][0], k])
            cache[i][1] = v_all = np.concatenate([cache[i][1], v])
            mask = causal & in_window if sliding else causal
            out = np.empty_like(q)
            for hq in range(self.n_head):
                kv = hq // group
                s = (q[:, hq, :] @ k_all[:, kv, :].T) * self.attn_scale
                s = np.where(mask, s, -np.inf)
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                out[:, hq, :] = (s / s.sum(axis=-1, keepdims=True)) @ v_all[:, kv, :]
            o = out.reshape(n, -1) @ l["attn_output"].T
            x = x + _rms_norm(o, l["post_attention_norm"], self.eps)
            h = _rms_norm(x, l["ffn_norm"], self.eps)
            f = (_gelu_tanh(h @ l["ffn_gate"].T) * (h @ l["ffn_up"].T)) @ l["ffn_down"].T
            x = x + _rms_norm(f, l["post_ffw_norm"], self.eps)
        if last_only:
            x = x[-1:]
        h = _rms_norm(x, self.output_norm, self.eps).astype(np.float32)
        return h @ self.embd.T
