"""What issue 14's 12-layer stage runs (suites/mpnet.py runs it, report/mpnet_section.py
reports it): the grid, its stages and the choices made on dev."""

from __future__ import annotations

from collections.abc import Sequence

from layergraft.pipeline.compare import RunKey
from lib.stages import Planned, strongest_with

TASK = "movie-sentiment"
DEPTHS = (6, 4, 3, 2)
BASELINES = ("drop-alternate", "drop-top", "drop-similar", "random", "average")
METHODS = ("graft", *BASELINES)
# graft's strategy, chosen on the MiniLM movie-sentiment dev ablations of issue 13 (BENCHMARKS.md,
# "levers", 1/4 budget, 2 seeds): plain distillation at the package defaults. No lever beat it
# by more than the seed std at both depths (6 -> 3: distill 96.5% dev retention, heal + distill
# 96.2, attention 97.1, chosen by reconstruction 95.0, replace 95.5; 6 -> 2: 94.0, 93.8, 94.6,
# 94.5, 92.9), progressive stayed behind (94.1 and 91.0), and attention transfer, the closest,
# runs the teacher live at every step (1.5x a step on MiniLM; more with a 12-layer teacher).
GRAFT_STRATEGY: str | None = "distill"
CURVE_BUDGETS = (0.25, 0.125, 0.5)
SEEDED_DEPTHS, EXTRA_SEEDS = (6, 3), (1, 2)
STAGES = {  # run in this order: graft's rows (M2) before the baselines', as the most telling
    "M0": "surgery only: every method at 6, 4, 3 and 2 layers",
    "M2": "graft with its best strategy at every depth",
    "M1": "every baseline distilled with the full budget at every depth",
    "M3": "budget curve at 6 layers: graft and the strongest baseline",
    "M4": "seeds 1 and 2 for graft and the strongest baseline at 6 and 3 layers",
}
FULL_BUDGET = "1 epoch"  # of distillation (why not the MiniLM suite's three: suites/mpnet.py)


def strongest_baseline(rows: Sequence[dict], layers: int) -> str | None:
    """The distilled baseline chosen on dev at the full budget, by the MiniLM suite's rule."""
    return strongest_with(rows, TASK, layers, "distill", BASELINES)


def paired_configs(rows: Sequence[dict]) -> list[tuple[str, int, tuple | None]]:
    """At each depth, graft against the strongest baseline (None until both are known)."""
    pairs = []
    for layers in DEPTHS:
        rival = strongest_baseline(rows, layers)
        configs = (("graft", GRAFT_STRATEGY), (rival, "distill")) if rival and GRAFT_STRATEGY \
            else None
        pairs.append((TASK, layers, configs))
    return pairs


def plan(stage: str, rows: Sequence[dict]) -> list[Planned]:
    if stage == "M0":
        return [Planned(stage, TASK, RunKey(m, "none", n)) for n in DEPTHS for m in METHODS]
    if stage == "M1":
        return [Planned(stage, TASK, RunKey(m, "distill", n)) for n in DEPTHS for m in BASELINES]
    waiting = None if GRAFT_STRATEGY else "graft's strategy (issue 13)"
    graft = RunKey("graft", GRAFT_STRATEGY or "<best strategy>", 6)
    if stage == "M2":
        return [Planned(stage, TASK, RunKey("graft", graft.strategy, n), waiting)
                for n in DEPTHS]
    planned = []
    depths = (6,) if stage == "M3" else SEEDED_DEPTHS
    for layers in depths:
        rival = strongest_baseline(rows, layers)
        pending = waiting or (None if rival else f"the M1 baselines at {layers} layers")
        configs = (("graft", graft.strategy), (rival or "<strongest baseline>", "distill"))
        for method, strategy in configs:
            if stage == "M3":
                planned += [Planned(stage, TASK, RunKey(method, strategy, layers, 0, b), pending)
                            for b in CURVE_BUDGETS]
            else:
                planned += [Planned(stage, TASK, RunKey(method, strategy, layers, s), pending)
                            for s in EXTRA_SEEDS]
    return planned
