"""The surgery itself: a pure function from a model and per-layer recipes to a new model.

Every method (graft, drop, average, random) only decides *recipes*; this module is the
one place that turns recipes into weights. The new model is built from a config with
the new depth and loaded with a strict state dict, so it is a stock model of standard
shape that `from_pretrained` loads with no custom code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from transformers import PreTrainedModel

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ArchSpec, encoder_layers, ffn_width, num_heads, spec_for
from layergraft.surgery.decoder import decoder_layer_state, trim_layer_config

Unit = tuple[int, int]  # (source layer, index within that layer)


@dataclass(frozen=True)
class LayerRecipe:
    """How one new layer is made from layers of the input model.

    Selection recipes take `heads` (one source head per slot) and `neurons` (one source
    neuron per FFN position) and combine the output biases and LayerNorms of the
    sources with the given weights. A `mix` recipe instead sets every parameter to the
    weighted sum of the sources' parameters (weight averaging).
    """

    sources: tuple[int, ...]
    heads: tuple[Unit, ...] | None = None
    neurons: tuple[Unit, ...] | None = None
    bias: Mapping[int, float] | None = None
    norm: Mapping[int, float] | None = None
    mix: Mapping[int, float] | None = None

    def to_dict(self) -> dict:
        data: dict = {"sources": list(self.sources)}
        if self.mix is not None:
            data["mix"] = _weights_to_json(self.mix)
            return data
        data["heads"] = [list(u) for u in self.heads or ()]
        data["neurons"] = {"layer": [u[0] for u in self.neurons or ()],
                           "index": [u[1] for u in self.neurons or ()]}
        data["bias"] = _weights_to_json(self.bias or {})
        data["norm"] = _weights_to_json(self.norm or {})
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> LayerRecipe:
        sources = tuple(int(s) for s in data["sources"])
        if "mix" in data:
            return cls(sources, mix=_weights_from_json(data["mix"]))
        neurons = data["neurons"]
        return cls(
            sources,
            heads=tuple((int(layer), int(h)) for layer, h in data["heads"]),
            neurons=tuple(zip((int(x) for x in neurons["layer"]),
                              (int(x) for x in neurons["index"]), strict=True)),
            bias=_weights_from_json(data["bias"]),
            norm=_weights_from_json(data["norm"]),
        )


def keep_recipe(layer: int, num_heads_: int, width: int) -> LayerRecipe:
    """The recipe that copies one layer unchanged (what dropping its neighbours keeps)."""
    return LayerRecipe(
        sources=(layer,),
        heads=tuple((layer, h) for h in range(num_heads_)),
        neurons=tuple((layer, n) for n in range(width)),
        bias={layer: 1.0},
        norm={layer: 1.0},
    )


def apply_recipes(
    model: PreTrainedModel, recipes: Sequence[LayerRecipe], spec: ArchSpec | None = None
) -> PreTrainedModel:
    """A new model whose encoder layers are built from `recipes`; `model` is untouched."""
    spec = spec or spec_for(model)
    layers = encoder_layers(model, spec)
    _check_recipes(recipes, len(layers), num_heads(model.config), spec)
    prefix = _layers_prefix(model, layers)
    source_states = [
        {name: tensor.detach() for name, tensor in layer.state_dict().items()} for layer in layers
    ]
    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.startswith(prefix)
    }
    build = partial(decoder_layer_state, select=_layer_state) if spec.decoder else _layer_state
    for index, recipe in enumerate(recipes):
        for name, tensor in build(source_states, recipe, spec, model.config).items():
            state[f"{prefix}{index}.{name}"] = tensor

    config = copy.deepcopy(model.config)
    trim_layer_config(config, [recipe.sources for recipe in recipes])
    config.num_hidden_layers = len(recipes)
    setattr(config, spec.ffn_config, _uniform_width(recipes, ffn_width(model, spec)))
    new_model = type(model)._from_config(config, dtype=model.dtype)
    missing, unexpected = new_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LayergraftError(  # a spec that does not describe the model fully
            f"surgery produced a state dict that does not fit {type(model).__name__}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}; check the ArchSpec"
        )
    new_model.train(model.training)
    if model.can_generate():  # a decoder keeps its generation settings (eos, pad, sampling)
        new_model.generation_config = copy.deepcopy(model.generation_config)
    return new_model


def unchanged_parameters(model: PreTrainedModel, recipes: Sequence[LayerRecipe],
                         spec: ArchSpec | None = None) -> dict[str, str]:
    """Each parameter of `model` (built by `apply_recipes` from `recipes`) that surgery copied
    unchanged, with its name in the input model: everything outside the encoder layers, and
    every layer a recipe keeps whole. What depends on the weights, not the surgery (an
    optimizer's moments), can follow these; a merged layer's parameters are new."""
    spec = spec or spec_for(model)
    prefix = _layers_prefix(model, encoder_layers(model, spec))
    heads, width = num_heads(model.config), ffn_width(model, spec)
    kept = {index: recipe.sources[0] for index, recipe in enumerate(recipes)
            if recipe == keep_recipe(recipe.sources[0], heads, width)}
    names = {}
    for name, _ in model.named_parameters():
        if not name.startswith(prefix):
            names[name] = name
            continue
        index, rest = name[len(prefix):].split(".", 1)
        if int(index) in kept:
            names[name] = f"{prefix}{kept[int(index)]}.{rest}"
    return names


def _uniform_width(recipes: Sequence[LayerRecipe], width: int) -> int:
    """The one FFN width of the new layers (a weight-averaged layer keeps `width`): stock
    `from_pretrained` builds every layer from one config field."""
    widths = sorted({len(r.neurons) if r.neurons is not None else width for r in recipes})
    if len(widths) > 1:
        raise LayergraftError(f"the new layers would have FFN widths {widths}, but a model's "
                              "layers share one intermediate_size: give them one width")
    return widths[0]


def _layers_prefix(model: PreTrainedModel, layers: torch.nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is layers:
            return f"{name}."
    raise LayergraftError("encoder layers are not part of the model")  # unreachable by spec


def _check_recipes(
    recipes: Sequence[LayerRecipe], num_layers: int, heads: int, spec: ArchSpec
) -> None:
    if not recipes:
        raise LayergraftError("a model needs at least one encoder layer")
    for recipe in recipes:
        if any(not 0 <= s < num_layers for s in recipe.sources):
            raise LayergraftError(
                f"recipe sources {recipe.sources} do not fit a model with {num_layers} layers"
            )
        if recipe.mix is None and (recipe.heads is None or len(recipe.heads) != heads):
            raise LayergraftError(f"a grafted layer needs exactly {heads} heads")
        if spec.slot_aligned and recipe.heads is not None:
            if [h for _, h in recipe.heads] != list(range(heads)):
                raise LayergraftError(
                    f"{spec.model_type} shares a per-head table across layers: head slot h "
                    "must be filled by a head h of one of the merged layers"
                )


def _layer_state(
    states: Sequence[Mapping[str, torch.Tensor]],
    recipe: LayerRecipe,
    spec: ArchSpec,
    config,
) -> dict[str, torch.Tensor]:
    template = states[recipe.sources[-1]]
    if recipe.mix is not None:
        return {name: _weighted(states, recipe.mix, name) for name in template}

    out = {name: tensor.clone() for name, tensor in template.items()}
    heads = num_heads(config)
    for path in _present(spec.head_projections, template):
        head_dim = template[f"{path}.weight"].shape[0] // heads
        for suffix in ("weight", "bias"):
            name = f"{path}.{suffix}"
            if name in template:
                out[name] = torch.cat([
                    states[layer][name][h * head_dim:(h + 1) * head_dim]
                    for layer, h in recipe.heads
                ])
    head_dim = template[f"{spec.attn_out}.weight"].shape[1] // heads
    out[f"{spec.attn_out}.weight"] = torch.cat([
        states[layer][f"{spec.attn_out}.weight"][:, h * head_dim:(h + 1) * head_dim]
        for layer, h in recipe.heads
    ], dim=1)
    out.update(_select_neurons(states, recipe.neurons, spec))
    for path, weights in ((spec.attn_out, recipe.bias), (spec.ffn_out, recipe.bias),
                          (spec.attn_norm, recipe.norm), (spec.ffn_norm, recipe.norm)):
        for suffix in (("bias",) if path in (spec.attn_out, spec.ffn_out) else ("weight", "bias")):
            name = f"{path}.{suffix}"
            if name in template:
                out[name] = _weighted(states, weights, name)
    return out


def _select_neurons(
    states: Sequence[Mapping[str, torch.Tensor]], neurons: Sequence[Unit], spec: ArchSpec
) -> dict[str, torch.Tensor]:
    """FFN rows of W1 (and b1, and SwiGLU's gate) and columns of W2, gathered per source
    layer in one go."""
    layer_ids = torch.tensor([u[0] for u in neurons])
    index = torch.tensor([u[1] for u in neurons])
    first = states[neurons[0][0]]
    w2 = f"{spec.ffn_out}.weight"
    row_names = [f"{path}.{suffix}" for path in filter(None, (spec.ffn_in, spec.ffn_gate))
                 for suffix in ("weight", "bias") if f"{path}.{suffix}" in first]
    out = {name: first[name].new_empty((len(neurons), *first[name].shape[1:]))
           for name in row_names}
    out[w2] = first[w2].new_empty((first[w2].shape[0], len(neurons)))
    for layer in layer_ids.unique().tolist():
        rows = (layer_ids == layer).nonzero().squeeze(1)
        src = index[rows]
        for name in row_names:
            out[name][rows] = states[layer][name][src]
        out[w2][:, rows] = states[layer][w2][:, src]
    return out


def _present(paths: Sequence[str], state: Mapping[str, torch.Tensor]) -> list[str]:
    return [path for path in paths if f"{path}.weight" in state]


def _weighted(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Mapping[int, float], name: str
) -> torch.Tensor:
    items = list(weights.items())
    if len(items) == 1 and items[0][1] == 1.0:
        return states[items[0][0]][name].clone()
    return sum(w * states[layer][name] for layer, w in items)


def _weights_to_json(weights: Mapping[int, float]) -> dict[str, float]:
    return {str(layer): float(w) for layer, w in weights.items()}


def _weights_from_json(data: Mapping[str, float]) -> dict[int, float]:
    return {int(layer): float(w) for layer, w in data.items()}
