"""The field's depth-reduction baselines for decoder LLMs (issue 34, DESIGN.md section 14).

Each is a method like those of `layergraft.surgery.methods` (a `MethodInput` in, a plan and
one recipe per new layer out), so `graft_model(model, layers=N, method=NAME, blocks=...)`
runs it and records its manifest step. Surgery holds no data: what a method reads off
calibration text comes in as a `BlockEvidence` (`layergraft.scoring.block_scores.measure_blocks`
builds one), the way `graft` reads importance scores.

- `shortgpt` (Men et al. 2024): drop the layers of lowest Block Influence
  BI_l = 1 - E[cos(x_l, x_{l+1})], averaged over every real token.
- `angular` (Gromov et al. 2025): drop the n = L - N contiguous layers l..l+n-1 whose ends
  are closest, argmin_l E[arccos(cos(x_l, x_{l+n})) / pi]; the paper averages over the last
  token of each text, which `measure_blocks` does by default. Any block may go, the last
  layer's included, as in the paper's rule (its simpler heuristic, drop the deepest layers,
  is the one that spares the final layer).
- `sleb` (Song et al. 2024): remove one layer at a time, each time the one whose removal
  raises the calibration NLL least, re-measuring on the shallower model after each removal.
- `laco` (Yang et al. 2024): each group becomes its first layer plus the later layers'
  differences, theta_l + sum_k (theta_{l+k} - theta_l) = (1 - m) theta_l + sum_k theta_{l+k},
  a weight combination recipe (negative weight on the first layer). The weights combined are
  each layer's with its RMSNorms folded in (exact per layer, `decoder.py`), the new norms 1;
  the authors' notebook adds raw linear weights into layer l, keeping its norms (and, as
  published, subtracts the already updated layer, which leaves the span's last layer): the
  paper's formula is what is followed here. With no plan, groups are
  found greedily: each step merges the two adjacent groups whose merged model's final hidden
  states stay most similar to the input model's (the paper's criterion; it scans top-down and
  accepts a merge above a threshold tuned per model, while here the target depth decides).
- `streamline` (Chen et al. 2024, LLM-Streamline): the m = L - N + 1 contiguous layers whose
  input and output are most similar (mean token cosine) become one layer, initialised as a
  copy of the span's last layer (the paper trains a lightweight replacement; which layer it
  starts from is this module's choice); local healing (`layergraft.training.heal`) then trains
  it on the span-end MSE, as the paper does.
- `drop-last` (Lu et al. 2026, "prune the last 25%"; their code keeps layers 0..N-1, the
  final one dropped too): exactly `drop-top`, one function under both names in `methods`.

Layers are addressed by the residual stream x_l (the input of layer l; x_L the last layer's
output before the final norm), so the top layer is measured like every other one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from layergraft.errors import LayergraftError
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import LayerRecipe, keep_recipe

if TYPE_CHECKING:
    from layergraft.surgery.methods import MethodInput

# Scores candidate models, each given as its recipes; None where one cannot be built (a
# merge of layers of different attention types).
CandidateJudge = Callable[[Sequence[Sequence[LayerRecipe]]], list[float | None]]
Result = tuple[Plan, list[LayerRecipe]]


@dataclass(frozen=True)
class BlockEvidence:
    """What the baselines read off calibration text, about the input model.

    `cosine[i, j]` is the mean cosine over real tokens between x_i and x_j, `angular[i, j]`
    the mean angular distance arccos(cos) / pi over the tokens `info["angular_tokens"]`
    names ([L+1, L+1] each); `nll` gives candidate models' mean next-token loss, `similarity`
    their final hidden states' mean token cosine to the input model's.
    """

    cosine: torch.Tensor | None = None
    angular: torch.Tensor | None = None
    nll: CandidateJudge | None = None
    similarity: CandidateJudge | None = None
    info: Mapping = field(default_factory=dict)

    def record(self) -> dict:
        """For the manifest: what was measured on, and each layer's Block Influence."""
        data = dict(self.info)
        if self.cosine is not None:
            data["block_influence"] = [round(float(v), 6) for v in block_influence(self.cosine)]
        return data


def block_influence(cosine: torch.Tensor) -> torch.Tensor:
    """BI_l = 1 - E[cos(x_l, x_{l+1})] of every layer [L], from the boundary cosines."""
    return 1 - cosine.diagonal(offset=1)


def _evidence(inp: MethodInput, name: str, what: str):
    """The evidence field `what` the method needs; one line of error when it is missing."""
    if inp.plan is not None and name != "laco":
        raise LayergraftError(f"method '{name}' chooses its own layers: give --layers, "
                              "not --pairs")
    value = getattr(inp.blocks, what, None) if inp.blocks is not None else None
    if value is None:
        raise LayergraftError(f"method '{name}' measures the model on calibration text: give "
                              "text (blocks from layergraft.scoring.block_scores)")
    return value


def _drop(inp: MethodInput, dropped: Sequence[int]) -> Result:
    # imported here: methods imports this module for its registry
    from layergraft.surgery.methods import _keep

    return _keep(inp, [layer for layer in range(inp.num_layers) if layer not in set(dropped)])


def shortgpt(inp: MethodInput) -> Result:
    """Drop the L - N layers of lowest Block Influence (Men et al. 2024, ShortGPT)."""
    influence = block_influence(_evidence(inp, "shortgpt", "cosine"))
    order = sorted(range(inp.num_layers), key=lambda layer: (float(influence[layer]), layer))
    return _drop(inp, order[:inp.num_layers - inp.target_layers])


def angular(inp: MethodInput) -> Result:
    """Drop the contiguous block of least angular distance between its ends (Gromov et al.)."""
    distance = _evidence(inp, "angular", "angular")
    n = inp.num_layers - inp.target_layers
    start = min(range(inp.num_layers - n + 1),
                key=lambda layer: (float(distance[layer, layer + n]), layer))
    return _drop(inp, range(start, start + n))


def streamline(inp: MethodInput) -> Result:
    """The most self-similar span of L - N + 1 layers becomes a copy of its last layer, the
    layer local healing then trains to reproduce the span (Chen et al. 2024, LLM-Streamline)."""
    cosine = _evidence(inp, "streamline", "cosine")
    m = inp.num_layers - inp.target_layers + 1
    start = max(range(inp.num_layers - m + 1),
                key=lambda layer: (float(cosine[layer, layer + m]), -layer))
    return _drop(inp, range(start, start + m - 1))


def sleb(inp: MethodInput) -> Result:
    """Greedy block removal by calibration NLL, re-measured after each (Song et al. 2024)."""
    nll = _evidence(inp, "sleb", "nll")
    kept = list(range(inp.num_layers))
    while len(kept) > inp.target_layers:
        candidates = [[keep_recipe(layer, inp.num_heads, inp.ffn_width)
                       for layer in kept if layer != removed] for removed in kept]
        losses = nll(candidates)
        best = min(range(len(kept)), key=lambda i: (losses[i], kept[i]))
        kept.pop(best)
    return _drop(inp, [layer for layer in range(inp.num_layers) if layer not in kept])


def laco_recipe(group: Sequence[int], heads: int, width: int) -> LayerRecipe:
    """LaCo's RDSC merge of a group into its first layer: weight 1 - m on it, 1 on the m
    others; a single layer is kept as it is."""
    if len(group) == 1:
        return keep_recipe(group[0], heads, width)
    first, *rest = group
    return LayerRecipe(sources=tuple(group), mix={first: 1.0 - len(rest),
                                                  **{layer: 1.0 for layer in rest}})


def laco(inp: MethodInput) -> Result:
    """Merge by Reserving Differences while Seeking Common (Yang et al. 2024, LaCo): the
    caller's plan, else merges found greedily by output similarity on calibration text."""
    if inp.plan is not None:
        plan = inp.resolved_plan()
    else:
        plan = _laco_plan(inp, _evidence(inp, "laco", "similarity"))
    return plan, [laco_recipe(group, inp.num_heads, inp.ffn_width) for group in plan.groups]


def _laco_plan(inp: MethodInput, similarity: CandidateJudge) -> Plan:
    """Merge adjacent groups one pair at a time, each time the pair whose merged model's
    final hidden states are most similar to the input model's, until N groups remain."""
    groups = [(layer,) for layer in range(inp.num_layers)]
    while len(groups) > inp.target_layers:
        merges = [[*groups[:i], groups[i] + groups[i + 1], *groups[i + 2:]]
                  for i in range(len(groups) - 1)]
        scores = similarity([[laco_recipe(g, inp.num_heads, inp.ffn_width) for g in merge]
                             for merge in merges])
        valid = [i for i, score in enumerate(scores) if score is not None]
        if not valid:
            raise LayergraftError(f"LaCo finds no two adjacent layer groups of {len(groups)} "
                                  "that merge into one layer (different attention types)")
        groups = merges[max(valid, key=lambda i: (scores[i], -i))]
    return Plan.from_groups(inp.num_layers, groups)


BASELINES = {
    "shortgpt": shortgpt,
    "angular": angular,
    "sleb": sleb,
    "laco": laco,
    "streamline": streamline,
}
# what each needs measured (laco only without a plan); the pipeline builds it from text
NEEDS_BLOCKS = frozenset(BASELINES)
