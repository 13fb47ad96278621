"""Tiny randomly initialised Llama and Qwen2 models in Hugging Face's folder format.

Each folder holds what transformers' save_pretrained writes (config.json, generation_config.json,
model.safetensors in float32) and no tokenizer: the tests feed token ids. Shapes are small enough
for a test to build and run both in a second, but keep what distinguishes the architectures:
grouped-query attention (4 query heads, 2 KV heads), Qwen2's q/k/v biases, and a tied (Qwen2) and
an untied (Llama) output matrix, which save_pretrained stores differently.

Usage as a script, to get the folders for debugging: python make_tiny_random.py OUT_DIR [--seed S]
"""
import argparse
from pathlib import Path

import torch
import transformers

TINY_SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,  # head_dim 16
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=256,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)

# arch -> (config class, model class, what differs from TINY_SHAPE)
ARCHITECTURES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(tie_word_embeddings=False)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
}

# Standard deviation of the random weights. transformers' default (0.02) gives near-uniform
# logits on a model this small, where a wrong layer would barely move the output.
WEIGHT_STD = 0.1
# Norm weights are 1 + N(0, NORM_STD): different per channel, so a norm applied without its
# weight, or with another layer's, is caught.
NORM_STD = 0.1


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Overwrites every parameter (biases included; transformers initialises them to zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                param.copy_(1.0 + NORM_STD * noise)
            else:
                param.copy_(WEIGHT_STD * noise)


def make_tiny_model(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Writes the folder and returns it."""
    config_cls, model_cls, overrides = ARCHITECTURES[arch]
    config = config_cls(**TINY_SHAPE, **overrides, torch_dtype="float32")
    model = model_cls(config).to(torch.float32).eval()
    randomize_(model, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def load_tiny_model(folder: Path) -> torch.nn.Module:
    """transformers' own model read back from the folder: the reference is exactly what is on disk."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, torch_dtype=torch.float32, attn_implementation="eager").eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for arch in ARCHITECTURES:
        print(make_tiny_model(arch, args.out_dir / arch, args.seed))


if __name__ == "__main__":
    main()
