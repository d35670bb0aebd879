"""Architecture knowledge as data: one frozen spec per encoder family.

Everything else in layergraft reaches into a model only through these specs, so a new
family is one table row (plus one entry in the contract test), never a new code path.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from layergraft.errors import LayergraftError


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one post-LN encoder layer live, as dotted module paths.

    `layers` is relative to the base model (`model.base_model`); the other paths are
    relative to one layer. `head_projections` are the linears whose output rows are
    grouped per attention head (Q, K, V and any positional projections); `attn_out`
    consumes the concatenated heads column-wise. `shared_head_table` names a per-head
    table shared by all layers (relative to the base model): heads must then keep
    their slot when layers merge.

    A `decoder` (Llama family, DESIGN.md section 14) is pre-norm: `attn_norm` and
    `ffn_norm` are the RMSNorms *before* attention and the FFN, which surgery folds into
    the projections they feed (`layergraft.surgery.decoder`); its attention unit is a KV
    group (`num_heads`); `ffn_gate` is SwiGLU's gate, selected with `ffn_in` row by row;
    `head_norms` pairs a per-head norm (Qwen3's q_norm) with the projection it follows.
    `ffn_config` is the config field of the FFN width, which surgery sets to the new width.
    `final_norm` (relative to the base model) is a decoder's norm after its last layer, which
    the last entry of `hidden_states` has passed through (healing matches it).
    """

    model_type: str
    layers: str
    head_projections: tuple[str, ...]
    attn_out: str
    attn_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    shared_head_table: str | None = None
    decoder: bool = False
    ffn_gate: str | None = None
    head_norms: tuple[tuple[str, str], ...] = ()
    ffn_config: str = "intermediate_size"
    final_norm: str | None = None

    @property
    def slot_aligned(self) -> bool:
        return self.shared_head_table is not None


_BERT_LIKE = dict(
    layers="encoder.layer",
    head_projections=(
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ),
    attn_out="attention.output.dense",
    attn_norm="attention.output.LayerNorm",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    ffn_norm="output.LayerNorm",
)

_LLAMA_LIKE = dict(
    layers="layers",
    head_projections=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out="self_attn.o_proj",
    attn_norm="input_layernorm",
    ffn_in="mlp.up_proj",
    ffn_gate="mlp.gate_proj",
    ffn_out="mlp.down_proj",
    ffn_norm="post_attention_layernorm",
    decoder=True,
    final_norm="norm",
)

ARCH_SPECS: Mapping[str, ArchSpec] = {
    "bert": ArchSpec(model_type="bert", **_BERT_LIKE),
    "roberta": ArchSpec(model_type="roberta", **_BERT_LIKE),
    "xlm-roberta": ArchSpec(model_type="xlm-roberta", **_BERT_LIKE),
    "electra": ArchSpec(model_type="electra", **_BERT_LIKE),
    "mpnet": ArchSpec(
        model_type="mpnet",
        layers="encoder.layer",
        head_projections=("attention.attn.q", "attention.attn.k", "attention.attn.v"),
        attn_out="attention.attn.o",
        attn_norm="attention.LayerNorm",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        ffn_norm="output.LayerNorm",
        shared_head_table="encoder.relative_attention_bias",
    ),
    "distilbert": ArchSpec(
        model_type="distilbert",
        layers="transformer.layer",
        head_projections=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        attn_out="attention.out_lin",
        attn_norm="sa_layer_norm",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        ffn_norm="output_layer_norm",
        ffn_config="hidden_dim",
    ),
    # DeBERTa-v2/v3: the relative-position embeddings are shared but hidden-sized and
    # projected by each layer's own Q/K (or pos_* when share_att_key is off), so heads
    # move freely between layers as long as their positional rows move with them.
    "deberta-v2": ArchSpec(
        model_type="deberta-v2",
        layers="encoder.layer",
        head_projections=(
            "attention.self.query_proj",
            "attention.self.key_proj",
            "attention.self.value_proj",
            "attention.self.pos_key_proj",
            "attention.self.pos_query_proj",
        ),
        attn_out="attention.output.dense",
        attn_norm="attention.output.LayerNorm",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        ffn_norm="output.LayerNorm",
    ),
    "llama": ArchSpec(model_type="llama", **_LLAMA_LIKE),
    "mistral": ArchSpec(model_type="mistral", **_LLAMA_LIKE),
    "qwen2": ArchSpec(model_type="qwen2", **_LLAMA_LIKE),  # q/k/v biases: copied per row
    "qwen3": ArchSpec(model_type="qwen3", **_LLAMA_LIKE, head_norms=(
        ("self_attn.q_norm", "self_attn.q_proj"), ("self_attn.k_norm", "self_attn.k_proj"))),
}


def supported_model_types() -> list[str]:
    return sorted(ARCH_SPECS)


def spec_for_config(config: PretrainedConfig, override: ArchSpec | None = None) -> ArchSpec:
    """The spec of a config's family; `override` (a caller's own spec) wins over the table."""
    if override is not None:
        return override
    model_type = getattr(config, "model_type", None)
    if model_type in ARCH_SPECS:
        return ARCH_SPECS[model_type]
    close = difflib.get_close_matches(str(model_type), ARCH_SPECS, n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise LayergraftError(
        f"unsupported architecture '{model_type}'{hint}: layergraft supports "
        f"{', '.join(supported_model_types())}; pass an ArchSpec to describe another "
        "post-LN encoder"
    )


def spec_for(model: PreTrainedModel, override: ArchSpec | None = None) -> ArchSpec:
    return spec_for_config(model.config, override)


def get_submodule(root: nn.Module, path: str) -> nn.Module | None:
    """The module at a dotted path, or None when this variant lacks it (e.g. pos_key_proj)."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def encoder_layers(model: PreTrainedModel, spec: ArchSpec | None = None) -> nn.ModuleList:
    spec = spec or spec_for(model)
    layers = get_submodule(model.base_model, spec.layers)
    if not isinstance(layers, nn.ModuleList):
        raise LayergraftError(
            f"model of type '{model.config.model_type}' has no layer list at "
            f"'{spec.layers}': is it an encoder of that family?"
        )
    return layers


def head_projections(layer: nn.Module, spec: ArchSpec) -> list[tuple[str, nn.Linear]]:
    """The per-head linears this layer actually has, with their paths."""
    found = [(path, get_submodule(layer, path)) for path in spec.head_projections]
    return [(path, module) for path, module in found if isinstance(module, nn.Linear)]


def num_heads(config: PretrainedConfig) -> int:
    """Attention units per layer: heads, or KV groups where query heads share KV heads (GQA:
    one KV head, its n_rep query heads and their o_proj columns move together)."""
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def num_layers(config: PretrainedConfig) -> int:
    return int(config.num_hidden_layers)


def ffn_width(model: PreTrainedModel, spec: ArchSpec | None = None) -> int:
    spec = spec or spec_for(model)
    return int(encoder_layers(model, spec)[0].get_submodule(spec.ffn_in).out_features)
