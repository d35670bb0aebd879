"""Choose a graft's options per span by reconstruction (`GraftOptions.choose`).

One global rule (the top two sources, mean biases and LayerNorms) is what measured best on
average over spans, but a shallow pair and a deep group of four may each be served better by
another. For every span of two or more layers this grafts one candidate layer per option
set (the run's own options first, then max_sources 2 or 0 (all) x BIAS_RULES x NORM_RULES;
an identical layer is judged once), asks a judge for each candidate's span error (its output
against the input model's state at the span's end, fed the state at its start, on calibration
data) and keeps the lowest; on a tie the earlier, so the run's own options win. Surgery
holds no data: the caller brings the judge (`layergraft.training.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from layergraft.surgery.methods import BIAS_RULES, NORM_RULES, GraftOptions, Method, MethodInput
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import LayerRecipe

MAX_SOURCES = (2, 0)  # the top two of a span, or all of it


class SpanJudge(Protocol):
    """Span errors of candidate layers: `spans[i]` is (start, end) in the input model's
    hidden states (0 = embeddings); the answer holds one error per `candidates[i]` recipe."""

    def __call__(self, spans: Sequence[tuple[int, int]],
                 candidates: Sequence[Sequence[LayerRecipe]]) -> list[list[float]]: ...

    def info(self) -> dict:
        """What the errors were measured on, for the manifest."""
        ...


def candidate_options(options: GraftOptions) -> list[GraftOptions]:
    """The option sets tried on every span, `options` themselves first, each once."""
    fixed = replace(options, choose="fixed")
    grid = [fixed, *(replace(fixed, max_sources=m, bias=b, norm=n)
                     for m in MAX_SOURCES for b in BIAS_RULES for n in NORM_RULES)]
    return list(dict.fromkeys(grid))


def choose_recipes(method: Method, inp: MethodInput,
                   judge: SpanJudge) -> tuple[Plan, list[LayerRecipe], dict]:
    """(plan, the lowest-error recipe of every span, the record of every candidate's error)."""
    grid = candidate_options(inp.options)
    made = [method(replace(inp, options=options)) for options in grid]
    plan, recipes = made[0][0], list(made[0][1])
    merged = [k for k, group in enumerate(plan.groups) if len(group) > 1]
    candidates = [_distinct([(options, made_recipes[k]) for options, (_, made_recipes)
                             in zip(grid, made, strict=True)]) for k in merged]
    errors = judge([(plan.groups[k][0], plan.groups[k][-1] + 1) for k in merged],
                   [[recipe for _, recipe in pairs] for pairs in candidates])
    spans = []
    for k, pairs, span_errors in zip(merged, candidates, errors, strict=True):
        best = min(range(len(pairs)), key=span_errors.__getitem__)  # the first of equals
        recipes[k] = pairs[best][1]
        spans.append({"layer": k, "span": list(plan.groups[k]),
                      "chosen": _rule(pairs[best][0]), "error": span_errors[best],
                      "candidates": [{**_rule(options), "error": error}
                                     for (options, _), error in zip(pairs, span_errors,
                                                                    strict=True)]})
    return plan, recipes, {"by": "reconstruction", **judge.info(), "spans": spans}


def _distinct(pairs: Sequence[tuple[GraftOptions, LayerRecipe]]
              ) -> list[tuple[GraftOptions, LayerRecipe]]:
    """Candidates whose layers differ (a 2-layer span's top two are all of it), first kept."""
    kept: list[tuple[GraftOptions, LayerRecipe]] = []
    for options, recipe in pairs:
        if all(recipe != other for _, other in kept):
            kept.append((options, recipe))
    return kept


def _rule(options: GraftOptions) -> dict:
    return {"max_sources": options.max_sources, "bias": options.bias, "norm": options.norm}
