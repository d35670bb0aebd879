"""The graft manifest: a replayable record of every surgery step, saved beside the model.

Steps hold recipes in the indices of their own input model, so `replay(teacher,
manifest)` re-runs them exactly; `layers` composes them back to teacher indices so a
reader sees which teacher layer every head and neuron came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ffn_width, num_heads, num_layers
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import LayerRecipe, apply_recipes, keep_recipe
from layergraft.utils import versions, write_json_atomic

MANIFEST_NAME = "graft_manifest.json"
FORMAT = "layergraft-manifest/1"


@dataclass
class GraftStep:
    method: str
    input_layers: int
    recipes: list[LayerRecipe]
    plan: dict | None = None
    options: dict = field(default_factory=dict)
    importance: dict | None = None
    seed: int | None = None
    refit: dict | None = None  # how output projections were refit on data after surgery
    choice: dict | None = None  # per span: the options chosen by reconstruction, and why
    recalibrated: dict | None = None  # output LayerNorms matched to the teacher's statistics
    width: dict | None = None  # --ffn-size: the new width, and whether intact layers shrank

    def to_dict(self) -> dict:
        return {"method": self.method, "input_layers": self.input_layers, "plan": self.plan,
                "options": self.options, "importance": self.importance, "seed": self.seed,
                "refit": self.refit, "choice": self.choice,
                **({"recalibrated": self.recalibrated} if self.recalibrated else {}),
                **({"width": self.width} if self.width else {}),
                "recipes": [r.to_dict() for r in self.recipes]}

    def span_ends(self) -> list[int]:
        """For each new layer, the hidden-state index (0 = embeddings) of the input model's
        layer that ends its span: the output the new layer stands in for."""
        if self.plan is None:  # a step recorded without its plan
            return [max(r.sources) + 1 for r in self.recipes]
        return [max(group) + 1 for group in Plan.from_dict(self.plan).groups]

    @classmethod
    def from_dict(cls, data: Mapping) -> GraftStep:
        return cls(method=data["method"], input_layers=int(data["input_layers"]),
                   recipes=[LayerRecipe.from_dict(r) for r in data["recipes"]],
                   plan=data.get("plan"), options=dict(data.get("options") or {}),
                   importance=data.get("importance"), seed=data.get("seed"),
                   refit=data.get("refit"), choice=data.get("choice"),
                   recalibrated=data.get("recalibrated"), width=data.get("width"))


@dataclass
class Manifest:
    teacher: dict
    steps: list[GraftStep] = field(default_factory=list)

    @classmethod
    def for_teacher(cls, model: PreTrainedModel) -> Manifest:
        return cls(teacher={
            "name_or_path": str(getattr(model.config, "_name_or_path", "") or ""),
            "model_type": model.config.model_type,
            "num_layers": num_layers(model.config),
            "num_heads": num_heads(model.config),
            "ffn_width": ffn_width(model),
        })

    @property
    def num_layers(self) -> int:
        return len(self.steps[-1].recipes) if self.steps else int(self.teacher["num_layers"])

    def depths(self) -> list[int]:
        """Depth after each step, starting with the teacher's (e.g. [6, 5, 4, 3])."""
        return [int(self.teacher["num_layers"])] + [len(s.recipes) for s in self.steps]

    def span_ends(self) -> list[int]:
        """`GraftStep.span_ends` composed over all steps, in the teacher's hidden states."""
        ends = list(range(1, int(self.teacher["num_layers"]) + 1))
        for step in self.steps:
            ends = [ends[end - 1] for end in step.span_ends()]
        return ends

    def composed_layers(self) -> list[dict]:
        """Each final layer in teacher indices: sources, heads, neurons, bias/norm weights."""
        heads, width = int(self.teacher["num_heads"]), int(self.teacher["ffn_width"])
        depth = int(self.teacher["num_layers"])
        views = [_view(keep_recipe(i, heads, width)) for i in range(depth)]
        for step in self.steps:
            views = [_compose(recipe, views) for recipe in step.recipes]
        return views

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "teacher": self.teacher,
            "depths": self.depths(),
            "steps": [s.to_dict() for s in self.steps],
            "layers": self.composed_layers(),
            "versions": versions(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Manifest:
        if data.get("format") != FORMAT:
            raise LayergraftError(f"not a layergraft manifest (format {data.get('format')!r})")
        return cls(teacher=dict(data["teacher"]),
                   steps=[GraftStep.from_dict(s) for s in data["steps"]])

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / MANIFEST_NAME
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest | None:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text()))


def replay(teacher: PreTrainedModel, manifest: Manifest) -> PreTrainedModel:
    """Rebuild the student from its teacher and manifest alone."""
    if num_layers(teacher.config) != int(manifest.teacher["num_layers"]):
        raise LayergraftError(
            f"this manifest was made from a {manifest.teacher['num_layers']}-layer teacher, "
            f"not this {num_layers(teacher.config)}-layer model"
        )
    if any(step.refit for step in manifest.steps):
        raise LayergraftError(
            "this student's output projections were refit on data after surgery, which the "
            "manifest does not replay: load the saved student instead")
    model = teacher
    for step in manifest.steps:
        model = apply_recipes(model, step.recipes)
    return model


def _view(recipe: LayerRecipe) -> dict:
    return {"sources": list(recipe.sources),
            "heads": [list(u) for u in recipe.heads] if recipe.heads is not None else None,
            "neurons": [list(u) for u in recipe.neurons] if recipe.neurons is not None else None,
            "bias": dict(recipe.bias or recipe.mix), "norm": dict(recipe.norm or recipe.mix)}


def _compose(recipe: LayerRecipe, inputs: Sequence[dict]) -> dict:
    sources = sorted({s for layer in recipe.sources for s in inputs[layer]["sources"]})

    def linear(weights: Mapping[int, float], key: str) -> dict[int, float]:
        out: dict[int, float] = {}
        for layer, w in weights.items():
            for src, v in inputs[layer][key].items():
                out[src] = out.get(src, 0.0) + w * v
        return out

    def trace(units: Sequence[tuple[int, int]] | None, key: str) -> list | None:
        if units is None or any(inputs[layer][key] is None for layer, _ in units):
            return None  # a weight-averaged layer has no single source per unit
        return [inputs[layer][key][i] for layer, i in units]

    if recipe.mix is not None:
        return {"sources": sources, "heads": None, "neurons": None,
                "bias": linear(recipe.mix, "bias"), "norm": linear(recipe.mix, "norm")}
    return {"sources": sources, "heads": trace(recipe.heads, "heads"),
            "neurons": trace(recipe.neurons, "neurons"),
            "bias": linear(recipe.bias, "bias"), "norm": linear(recipe.norm, "norm")}
