"""Tiny random models and batches for every supported family, shared by all tests.

Plain functions (not only fixtures) so tests can build variants: other depths, label
counts, config overrides, or the same sentences padded further.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from layergraft.runtime import cpu_capability, native_bf16

HIDDEN = 32
HEADS = 4
FFN = 37
VOCAB = 100
MAX_POSITIONS = 64
# Token ids at or above this are never special (pad/cls/sep/unk/mask) in any family.
FIRST_WORD_ID = 5

# Config field names differ per family; everything else is the family's default.
_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_attention_heads=HEADS,
    intermediate_size=FFN,
    max_position_embeddings=MAX_POSITIONS,
)
_FAMILY_CONFIG: dict[str, dict[str, Any]] = {
    "bert": _SIZES,
    "roberta": _SIZES,
    "xlm-roberta": _SIZES,
    "electra": {**_SIZES, "embedding_size": HIDDEN},
    "mpnet": _SIZES,
    "distilbert": dict(
        vocab_size=VOCAB, dim=HIDDEN, n_heads=HEADS, hidden_dim=FFN,
        max_position_embeddings=MAX_POSITIONS,
    ),
    # DeBERTa-v2 with relative attention but separate positional projections per layer
    # (share_att_key off: pos_key_proj and pos_query_proj), no absolute positions.
    "deberta-v2": {
        **_SIZES,
        "relative_attention": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "max_relative_positions": -1,
        "position_buckets": 16,
        "norm_rel_ebd": "layer_norm",
    },
    # DeBERTa-v3 as released (microsoft/deberta-v3-*'s config.json, sizes aside): the
    # positional embeddings are projected by each layer's own key/query (share_att_key),
    # both c2p and p2c, log buckets, no token types and no absolute positions.
    "deberta-v3": {
        **_SIZES,
        "relative_attention": True,
        "share_att_key": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "max_relative_positions": -1,
        "position_buckets": 256,
        "norm_rel_ebd": "layer_norm",
        "type_vocab_size": 0,
        "hidden_act": "gelu",
    },
}
# Variants named apart from their family, so a contract test covers both configurations.
_VARIANT_OF = {"deberta-v3": "deberta-v2"}
_LAYER_COUNT_FIELD = {"distilbert": "n_layers"}
# Every family of the architecture table, and the variants: what contract tests run over.
TINY_FAMILIES = sorted(_FAMILY_CONFIG)


def family_of(name: str) -> str:
    """The model_type (architecture table row) of a tiny family or variant."""
    return _VARIANT_OF.get(name, name)


def make_tiny_model(
    model_type: str, num_labels: int = 2, num_layers: int = 4, seed: int = 0, **overrides: Any
) -> PreTrainedModel:
    """A seeded random *ForSequenceClassification of one family (or variant, such as
    "deberta-v3"), in eval mode."""
    fields = {
        **_FAMILY_CONFIG[model_type],
        _LAYER_COUNT_FIELD.get(model_type, "num_hidden_layers"): num_layers,
        "num_labels": num_labels,
        **overrides,
    }
    config = AutoConfig.for_model(family_of(model_type), **fields)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config).eval()


def uses_token_type_ids(model: PreTrainedModel) -> bool:
    """Whether the family takes segment ids and has an embedding table for them."""
    takes = "token_type_ids" in inspect.signature(model.forward).parameters
    return takes and getattr(model.config, "type_vocab_size", 0) > 0


def make_tiny_batches(
    model: PreTrainedModel, n_batches: int = 2, batch: int = 4, seq: int = 10, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Right-padded random batches; each holds one full-length and at least one padded row."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    batches = []
    for _ in range(n_batches):
        lengths = torch.randint(2, seq, (batch,), generator=generator)
        lengths[0] = seq
        mask = (torch.arange(seq) < lengths[:, None]).long()
        ids = torch.randint(FIRST_WORD_ID, VOCAB, (batch, seq), generator=generator)
        item = {"input_ids": ids.masked_fill(mask == 0, pad_id), "attention_mask": mask}
        if uses_token_type_ids(model):
            second_segment = torch.arange(seq) >= (lengths[:, None] // 2)
            item["token_type_ids"] = (second_segment & (mask == 1)).long()
        if config.num_labels == 1:
            item["labels"] = torch.randn(batch, generator=generator)
        else:
            item["labels"] = torch.randint(0, config.num_labels, (batch,), generator=generator)
        batches.append(item)
    return batches


def pad_further(
    batch: dict[str, torch.Tensor], extra: int, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """The same sentences with `extra` more padding columns on the right."""
    padded = dict(batch)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in batch:
            fill = pad_token_id if key == "input_ids" else 0
            columns = batch[key].new_full((batch[key].shape[0], extra), fill)
            padded[key] = torch.cat([batch[key], columns], dim=1)
    return padded



@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models run many times faster on one thread: OpenMP threads mostly wait on each
    other at these sizes, worse on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# A test of bfloat16 itself runs only where the CPU computes it natively: elsewhere autocast
# emulates it many times slower, and layergraft would never choose it there.
NEEDS_NATIVE_BF16 = pytest.mark.skipif(
    not native_bf16(torch.device("cpu")),
    reason=f"bf16 is not native on this CPU ({cpu_capability()}): autocast would emulate it")
