"""Compression methods as recipe makers: which units of which layers each new layer keeps.

A method never touches weights (that is `recipes.apply_recipes`); it turns a plan (or a
target depth), optional importance scores and similarities into one `LayerRecipe` per
new layer. All methods share this signature so `compress` and `compare` treat them alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch

from layergraft.errors import LayergraftError
from layergraft.surgery.decoder_baselines import BASELINES, BlockEvidence
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import LayerRecipe, Unit, keep_recipe
from layergraft.surgery.width import parse_ffn_size, shrinks_intact

BIAS_RULES = ("sum", "later", "earlier", "mean")
NORM_RULES = ("mean", "later", "earlier")
QUOTAS = ("free", "equal")
# How each span's max_sources, bias and norm are set: by these options for every span
# ("fixed"), or per span by how well the grafted layer reproduces the span's output on
# calibration data ("reconstruction", `layergraft.surgery.choose`).
CHOICES = ("fixed", "reconstruction")
CALIBRATION_TEXTS = 256


@dataclass(frozen=True)
class GraftOptions:
    """How a group of layers becomes one.

    Defaults by measurement (benchmarks/graft_ablation.py: MiniLM movie-sentiment teacher,
    dev accuracy after 0.75 epoch of distillation, mean of seeds 0 and 1):
    `max_sources=2` grafts only the top two layers of a group and drops the rest, since
    units of low layers do not fit on top of a deep merge: 6 -> 1 with all six sources
    58.2%, top three 71.8%, top two 74.0% (keeping the top layer alone 73.4%); 6 -> 2 about
    the same either way (77.2% with all three). A pair graft, the method's own case, is
    unaffected. Mean output biases (instead of DESIGN.md's sum) start closer to the teacher
    after surgery (6 -> 3: 76.4 vs 74.8% dev) and end at least as good: top two, 6 -> 2
    77.2 vs 76.4%, 6 -> 1 74.0 vs 74.2%. Mean LayerNorms as in DESIGN.md's first trial.
    Per-layer score normalisation and equal per-source quotas were weaker remedies for
    deep merges; on top of the top-two rule (lr 4e-4) normalised scores change nothing
    beyond noise: 6 -> 2 80.4 vs 80.8%, 6 -> 1 78.7 vs 78.1%.

    `choose="reconstruction"` instead picks max_sources, bias and norm per span (these
    options are the first candidate) by the grafted layer's span error on `calibration`
    training texts, since the best rule may differ between shallow and deep spans; it stays
    off by default until dev accuracy says otherwise.

    `ffn_size` (DESIGN.md section 15) gives every new layer that many FFN neurons (a count,
    or a fraction of the teacher's intermediate_size), chosen by the same importance over
    the span; layers kept whole then shrink too, to their own best neurons, since a config
    has one width (`ffn_size_all` asks for that, so it is no warning). `heads` is for
    families whose config carries head_dim (`layergraft.surgery.width.check_heads`).
    """

    bias: str = "mean"
    norm: str = "mean"
    normalize_scores: bool = False
    quota: str = "free"
    max_sources: int = 2
    choose: str = "fixed"
    calibration: int = CALIBRATION_TEXTS
    ffn_size: int | float | None = None
    ffn_size_all: bool = False
    heads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ffn_size", parse_ffn_size(self.ffn_size))
        if self.ffn_size_all and self.ffn_size is None:
            raise LayergraftError("--ffn-size-all shrinks the layers kept whole to --ffn-size: "
                                  "give --ffn-size too")
        if self.heads is not None and self.heads < 1:
            raise LayergraftError(f"--heads must be 1 or more, not {self.heads}")
        for value, allowed, flag in ((self.bias, BIAS_RULES, "--bias"),
                                     (self.norm, NORM_RULES, "--norm"),
                                     (self.quota, QUOTAS, "--quota"),
                                     (self.choose, CHOICES, "--choose-by")):
            if value not in allowed:
                raise LayergraftError(f"{flag} must be one of {', '.join(allowed)}, not '{value}'")
        if self.max_sources < 0:
            raise LayergraftError(f"--max-sources must be 0 (all) or more, not {self.max_sources}")
        if self.calibration < 1:
            raise LayergraftError(f"--calibration must be 1 or more texts, not {self.calibration}")

    @property
    def by_reconstruction(self) -> bool:
        return self.choose == "reconstruction"

    def check_calibration(self, method: str, has_texts: bool) -> None:
        """Refuse a choice by reconstruction with no texts to calibrate on (where the method
        takes these options at all)."""
        if self.by_reconstruction and method in TAKES_OPTIONS and not has_texts:
            raise LayergraftError("--choose-by reconstruction calibrates on training texts: "
                                  "give --task (a task name or a data file)")

    def check_method(self, method: str) -> None:
        """Refuse a width for a method that keeps or averages whole layers."""
        asked = [flag for flag, value in (("--ffn-size", self.ffn_size),
                                          ("--heads", self.heads)) if value is not None]
        if asked and method not in TAKES_OPTIONS:
            raise LayergraftError(f"{' and '.join(asked)} shape the layers that methods choosing "
                                  f"units by score build ({', '.join(sorted(TAKES_OPTIONS))}), "
                                  f"not '{method}'")

    def to_dict(self) -> dict:
        """The options; the choice rule and the width only when on, so runs and manifests
        from before them keep their settings."""
        data = asdict(self)
        if not self.by_reconstruction:
            del data["choose"], data["calibration"]
        for name, default in (("ffn_size", None), ("ffn_size_all", False), ("heads", None)):
            if data[name] == default:
                del data[name]
        return data


@dataclass(frozen=True)
class MethodInput:
    """Everything a method may look at. Scores are [L, H] / [L, I]; cka is [L+1, L+1]."""

    num_layers: int
    num_heads: int
    ffn_width: int
    target_layers: int
    plan: Plan | None = None
    head_scores: torch.Tensor | None = None
    neuron_scores: torch.Tensor | None = None
    cka: torch.Tensor | None = None
    adjacent_cosine: torch.Tensor | None = None
    options: GraftOptions = GraftOptions()
    slot_aligned: bool = False
    seed: int = 0
    ffn_size: int | None = None  # neurons of every new layer (None: ffn_width)
    blocks: BlockEvidence | None = None  # calibration evidence of the decoder baselines

    def resolved_plan(self) -> Plan:
        """The caller's plan, else the most-similar-first plan, else uniform groups."""
        if self.plan is not None:
            if self.plan.num_layers != self.num_layers:
                raise LayergraftError(
                    f"plan is for {self.plan.num_layers} layers but the model has "
                    f"{self.num_layers}"
                )
            return self.plan
        if self.cka is not None:
            return Plan.by_similarity(self.cka, self.target_layers)
        return Plan.uniform(self.num_layers, self.target_layers)


Method = Callable[[MethodInput], tuple[Plan, list[LayerRecipe]]]


def _combine(group: Sequence[int], rule: str) -> dict[int, float]:
    if rule == "sum":
        return {layer: 1.0 for layer in group}
    if rule == "mean":
        return {layer: 1.0 / len(group) for layer in group}
    return {group[-1] if rule == "later" else group[0]: 1.0}


def _select(scores: torch.Tensor, group: Sequence[int], count: int, quota: str) -> list[Unit]:
    """The `count` best units of the group's layers, in (layer, index) order."""
    pool = scores[list(group)]  # [len(group), units]
    if quota == "equal":
        shares = [count // len(group) + (1 if i < count % len(group) else 0)
                  for i in range(len(group))]
        chosen = [(group[i], int(j)) for i, share in enumerate(shares)
                  for j in torch.topk(pool[i], share).indices]
    else:
        flat = torch.topk(pool.flatten(), count).indices
        chosen = [(group[int(k) // pool.shape[1]], int(k) % pool.shape[1]) for k in flat]
    return sorted(chosen)


def _select_slots(scores: torch.Tensor, group: Sequence[int]) -> list[Unit]:
    """Slot-aligned heads: for each head index, the better of the group's heads there."""
    best = scores[list(group)].argmax(dim=0)
    return [(group[int(b)], h) for h, b in enumerate(best)]


def _graft_recipes(inp: MethodInput, head_scores: torch.Tensor,
                   neuron_scores: torch.Tensor) -> tuple[Plan, list[LayerRecipe]]:
    plan = inp.resolved_plan()
    if inp.options.normalize_scores:
        head_scores = head_scores / head_scores.norm(dim=1, keepdim=True).clamp_min(1e-12)
        neuron_scores = neuron_scores / neuron_scores.norm(dim=1, keepdim=True).clamp_min(1e-12)
    groups = [span[-inp.options.max_sources:] if inp.options.max_sources else span
              for span in plan.groups]
    width = inp.ffn_size or inp.ffn_width
    shrink = shrinks_intact(groups, inp.ffn_width, width)
    recipes = []
    for group in groups:
        if len(group) == 1:
            recipes.append(_narrowed(group[0], inp.num_heads, neuron_scores, width) if shrink
                           else keep_recipe(group[0], inp.num_heads, inp.ffn_width))
            continue
        heads = (_select_slots(head_scores, group) if inp.slot_aligned
                 else _select(head_scores, group, inp.num_heads, inp.options.quota))
        recipes.append(LayerRecipe(
            sources=tuple(group),
            heads=tuple(heads),
            neurons=tuple(_select(neuron_scores, group, width, inp.options.quota)),
            bias=_combine(group, inp.options.bias),
            norm=_combine(group, inp.options.norm),
        ))
    return plan, recipes


def _narrowed(layer: int, heads: int, neuron_scores: torch.Tensor, width: int) -> LayerRecipe:
    """A layer kept whole but for its FFN: its own best `width` neurons, in index order."""
    return replace(keep_recipe(layer, heads, width),
                   neurons=tuple(_select(neuron_scores, (layer,), width, "free")))


def graft(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    """Importance-based graft (DESIGN section 3)."""
    if inp.head_scores is None or inp.neuron_scores is None:
        raise LayergraftError(
            "method 'graft' needs importance scores: give --task (data to score on) or "
            "precomputed scores from `layergraft analyze`"
        )
    return _graft_recipes(inp, inp.head_scores, inp.neuron_scores)


def random_graft(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    """Same shape and options as `graft`, units chosen uniformly at random (seeded)."""
    generator = torch.Generator().manual_seed(inp.seed)
    heads = torch.rand((inp.num_layers, inp.num_heads), generator=generator)
    neurons = torch.rand((inp.num_layers, inp.ffn_width), generator=generator)
    return _graft_recipes(inp, heads, neurons)


def average(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    """Weight-averaging merge of each group (LaCo / MKA style)."""
    plan = inp.resolved_plan()
    return plan, [LayerRecipe(sources=g, mix={layer: 1.0 / len(g) for layer in g})
                  for g in plan.groups]


def _keep(inp: MethodInput, kept: Sequence[int]) -> tuple[Plan, list[LayerRecipe]]:
    """Drop every layer not in `kept`; the plan records which group each kept layer ends."""
    kept = sorted(kept)
    groups, start = [], 0
    for position, layer in enumerate(kept):
        end = layer if position < len(kept) - 1 else inp.num_layers - 1
        groups.append(tuple(range(start, end + 1)))
        start = end + 1
    plan = Plan.from_groups(inp.num_layers, groups)
    return plan, [keep_recipe(layer, inp.num_heads, inp.ffn_width) for layer in kept]


def drop_top(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    """Keep the bottom N layers (Sajjad et al. 2020's best simple strategy)."""
    return _keep(inp, range(inp.target_layers))


def drop_bottom(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    return _keep(inp, range(inp.num_layers - inp.target_layers, inp.num_layers))


def alternate_layers(num_layers: int, target_layers: int) -> list[int]:
    """The layers keep-alternate keeps: layer ceil((i + 1) * L / N) - 1 for i in 0..N-1.

    Evenly spaced and always ending with the top layer: the N gaps (counting the one below
    the first kept layer) differ by at most one. 6 -> 3 keeps 1, 3, 5; 6 -> 4 keeps 1, 2,
    4, 5; 12 -> 4 keeps 2, 5, 8, 11. Integer arithmetic, so no rounding rule (such as
    round-half-to-even) can move a layer.
    """
    return [((i + 1) * num_layers + target_layers - 1) // target_layers - 1
            for i in range(target_layers)]


def drop_alternate(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    """Keep evenly spaced layers ending with the top one (`alternate_layers`)."""
    return _keep(inp, alternate_layers(inp.num_layers, inp.target_layers))


def drop_similar(inp: MethodInput) -> tuple[Plan, list[LayerRecipe]]:
    """Drop the layers whose output is most similar to their input (they change least)."""
    if inp.adjacent_cosine is None:
        raise LayergraftError(
            "method 'drop-similar' needs layer similarities: give --task so layergraft "
            "can measure them"
        )
    order = torch.argsort(inp.adjacent_cosine, descending=True).tolist()
    dropped = set(order[: inp.num_layers - inp.target_layers])
    return _keep(inp, [layer for layer in range(inp.num_layers) if layer not in dropped])


METHODS: dict[str, Method] = {
    "graft": graft,
    "random": random_graft,
    "average": average,
    "drop-top": drop_top,
    "drop-bottom": drop_bottom,
    "drop-alternate": drop_alternate,
    "drop-similar": drop_similar,
}
NEEDS_SCORES = frozenset({"graft"})
TAKES_OPTIONS = frozenset({"graft", "random"})  # the methods GraftOptions shape
NEEDS_SIMILARITY = frozenset({"drop-similar"})
# The decoder LLM baselines (`decoder_baselines`), apart from METHODS, the encoder grid that
# `compare` and the benchmarks run; drop-last (Lu et al. 2026: keep the first N) is drop-top.
DECODER_METHODS: dict[str, Method] = {**BASELINES, "drop-last": drop_top}


def get_method(name: str) -> Method:
    known = {**METHODS, **DECODER_METHODS}
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise LayergraftError(f"unknown method '{name}'{hint}: choose one of {', '.join(known)}")
