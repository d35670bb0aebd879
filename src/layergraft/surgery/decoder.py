"""What surgery does differently for pre-norm decoders (Llama family, DESIGN.md section 14).

`recipes.apply_recipes` builds every new layer the same way, copying each kept unit's rows and
columns from its source layer by the ArchSpec; for a decoder a unit is a KV group (one KV
head, its n_rep query heads, their o_proj columns: query head h reads KV head h // n_rep, so a
group is one contiguous block of q rows and of o_proj columns) or one SwiGLU neuron (gate row,
up row, down column). Around that selection `decoder_layer_state` makes the layer exact:

- **RMSNorm folding.** Sources keep their own norms: when a new layer's attention units come
  from two or more layers, each source's input norm weight w is folded into its q/k/v columns
  (W diag(w)) and the new norm weight is 1; the same for the post-attention norm and gate/up.
  This is exact per source. Units all from one layer keep that layer's norm unchanged. A
  weight-averaging (`mix`) recipe averages the folded weights, since the norms are not shared.
- **Per-head norms (Qwen3 q_norm / k_norm).** They act on every head of a layer with one
  head_dim vector after the per-head RMS, so nothing folds them into the rows before it: the
  new layer takes the norms of the source that gives it the most KV groups (on a tie the later
  one, which the next layer is used to), exact for all of that source's groups and so for the
  whole layer when all groups come from one layer. Each other source s has its q (k) rows
  scaled per head dimension by w_s / w_new, which makes its normalised vectors exact in
  direction: they differ only by one scale per token and head, rms(q) / rms(q w_s / w_new),
  which is 1 where w_s is proportional to w_new.
- **Config.** Per-layer lists (`layer_types`: full or sliding-window attention) follow their
  layers; a layer cannot be made from layers of different types. Qwen2's `max_window_layers`
  (the first layers, which never slide) counts the new layers made only of layers below it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from transformers import PretrainedConfig

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ArchSpec

LAYER_LISTS = ("layer_types",)  # per-layer config lists, one entry per layer
State = Mapping[str, torch.Tensor]
Select = Callable[[Sequence[State], object, ArchSpec, PretrainedConfig], dict]


def decoder_layer_state(states: Sequence[State], recipe, spec: ArchSpec,
                        config: PretrainedConfig, select: Select) -> dict[str, torch.Tensor]:
    """One new decoder layer: `select` (the shared unit copy) on sources whose norms were
    folded where units of several layers meet, then the new layer's own norms."""
    attention, ffn = _unit_sources(recipe)
    head_norm_source = _head_norm_source(recipe, attention)
    prepared = list(states)
    for layer in sorted({*recipe.sources, *attention, *ffn}):
        state = dict(states[layer])
        if len(attention) > 1:
            _fold(state, spec.attn_norm, spec.head_projections)
        if len(ffn) > 1:
            _fold(state, spec.ffn_norm, (spec.ffn_in, spec.ffn_gate))
        _match_head_norms(state, states[head_norm_source], spec)
        prepared[layer] = state
    out = select(prepared, recipe, spec, config)
    for path, layer in ((spec.attn_norm, attention[0]), (spec.ffn_norm, ffn[0]),
                        *((norm, head_norm_source) for norm, _ in spec.head_norms)):
        out[f"{path}.weight"] = prepared[layer][f"{path}.weight"].clone()
    return out


def trim_layer_config(config: PretrainedConfig, groups: Sequence[Sequence[int]]) -> None:
    """Make `config`'s per-layer entries those of the new layers, whose source layers are
    `groups` (in place; the caller's copy). One line of error for a group of mixed types."""
    for name in LAYER_LISTS:
        values = getattr(config, name, None)
        if values is None:
            continue
        new = []
        for group in groups:
            kinds = list(dict.fromkeys(values[layer] for layer in group))
            if len(kinds) > 1:
                raise LayergraftError(
                    f"layers {min(group)}-{max(group)} of this {config.model_type} model have "
                    f"different {name} ({', '.join(kinds)}): one layer cannot be both, so "
                    "merge only layers of the same attention type (choose other --pairs)")
            new.append(kinds[0])
        setattr(config, name, new)
    window = getattr(config, "max_window_layers", None)
    if window is not None:
        config.max_window_layers = sum(1 for group in groups if max(group) < window)


def _unit_sources(recipe) -> tuple[list[int], list[int]]:
    """The layers the new layer's attention units and FFN units come from, in order."""
    if recipe.mix is not None:
        return sorted(recipe.mix), sorted(recipe.mix)
    return (sorted({layer for layer, _ in recipe.heads}),
            sorted({layer for layer, _ in recipe.neurons}))


def _head_norm_source(recipe, attention: Sequence[int]) -> int:
    """The source giving the most KV groups (the largest mix weight); on a tie the later."""
    if recipe.mix is not None:
        return max(attention, key=lambda layer: (recipe.mix[layer], layer))
    counts = {layer: 0 for layer in attention}
    for layer, _ in recipe.heads:
        counts[layer] += 1
    return max(attention, key=lambda layer: (counts[layer], layer))


def _fold(state: dict, norm: str, paths: Sequence[str | None]) -> None:
    """W diag(w) for every linear the norm feeds; the norm weight becomes 1."""
    weight = state[f"{norm}.weight"]
    for path in filter(None, paths):
        if f"{path}.weight" in state:
            state[f"{path}.weight"] = state[f"{path}.weight"] * weight
    state[f"{norm}.weight"] = torch.ones_like(weight)


def _match_head_norms(state: dict, target: State, spec: ArchSpec) -> None:
    """Give this source the target's per-head norms, its rows rescaled by w / w_target per
    head dimension (the direction-exact compensation of the module docstring)."""
    for norm, projection in spec.head_norms:
        own, new = state[f"{norm}.weight"], target[f"{norm}.weight"]
        if own is new:
            continue
        tiny = torch.finfo(new.dtype).eps * new.abs().max().clamp_min(1)
        scale = torch.where(new.abs() > tiny, own / new, torch.ones_like(new))
        for suffix in ("weight", "bias"):
            name = f"{projection}.{suffix}"
            if name in state:
                rows = state[name].unflatten(0, (-1, scale.numel()))  # [heads, head_dim, ...]
                shape = (-1, scale.numel()) + (1,) * (rows.dim() - 2)
                state[name] = (rows * scale.view(shape)).flatten(0, 1)
        state[f"{norm}.weight"] = new
