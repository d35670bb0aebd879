"""Tiny random decoder LLMs of every Llama-family row of the architecture table.

Each has GQA with n_rep = 2 (4 query heads over 2 KV heads, head_dim 8 apart from the hidden
size), randomised norm weights (folding a norm of ones would prove nothing) and biases, and
comes tied or untied. Qwen2's layers 2 and 3 use sliding-window attention (window 4) and
Mistral's all do, so a test sequence longer than the window exercises the per-layer types.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 4, 4, 2, 8, 24, 100
DECODER_FAMILIES = {
    "llama": {},
    "qwen2": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2},
    "qwen3": {},
    "mistral": {"sliding_window": 4},
}


def tiny_decoder(family: str, tied: bool = False, seed: int = 0,
                 **overrides) -> PreTrainedModel:
    """A seeded random *ForCausalLM in eval mode (float32, sdpa attention); `overrides` may
    replace any config field, the sizes above included."""
    config = AutoConfig.for_model(family, **{
        "vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "max_position_embeddings": 64, "initializer_range": 0.3,
        "tie_word_embeddings": tied, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        **DECODER_FAMILIES[family], **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.copy_(1 + 0.4 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.normal_(0, 0.2)
    return model


def token_ids(rows: int = 2, length: int = 10, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (rows, length), generator=generator)
