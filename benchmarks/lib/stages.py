"""What the offline suite runs, stage by stage, so that the most informative rows land first.

A-C are fixed grids (every method with `none` and `distill`, plus `graft` with every
strategy, `replace` and healing before distillation included) at the full budget. D (budget
curves) and E (two more seeds) follow, at each task and depth, graft's best strategy and
the strongest baseline: both chosen on the dev split from the seed-0, full-budget rows
(`dev_rank`), never on test, and only once every grid cell they are chosen among has
finished (so the choice never changes under a rerun). Until then a stage D/E cell is
planned as a placeholder with the reason it waits. H is issue 13's retraining-free grid
(healing alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layergraft.pipeline.compare import RunKey
from layergraft.report.tables import format_cell, markdown_from_cells
from layergraft.surgery.methods import METHODS

# Task -> the metric its targets are stated in (issue 5: accuracy, Spearman for rating).
TASKS: Mapping[str, str] = {"movie-sentiment": "accuracy", "movie-rating": "spearman"}
DEPTHS = (3, 2, 1)
# 3 epochs: enough for every method to converge at half depth (the one-seed trial
# ended within noise of 99% retention at 3 layers), as long as the teachers' own
# fine-tuning, and ~10 CPU-minutes a 3-layer run on this 2-core machine.
FULL_BUDGET = "3 epochs"
# Teachers: the package default (a dev sweep chose 2 epochs, see train.py), best epoch kept.
TEACHER_EPOCHS, TEACHER_SEED = 2.0, 0
# fp32 on every machine: the CPU behind this project changes between sessions, bf16 is
# native on some and emulated (~20x slower) on others, and one table never mixes the two.
PRECISION = "fp32"
CURVE_BUDGETS = (0.25, 0.125, 0.5)  # 1/4 first: the compute target reads it
EXTRA_SEEDS = (1, 2)
BASELINES = tuple(m for m in METHODS if m != "graft")
# Issue 13's healing: 10% of one distillation epoch's compute (26 steps of batch 32 by
# training/heal.py's cost rule), alone (stage H: retraining-free) or before distillation.
HEAL_STEPS = 26
HEALED_DISTILL = f"distill+heal{HEAL_STEPS}"  # a strategy label: distill, healed first
# graft's strategies in the grid: v0.1's, plus module replacement and healing (issue 13)
TRAINED = ("finetune", "distill", "progressive", "replace", HEALED_DISTILL)
GRID_STRATEGIES: Mapping[str, tuple[str, ...]] = {"graft": TRAINED}  # baselines: distill
# what each budget point of the curves chooses among, on dev at that point: graft's
# strategies that distil (finetune, on labels alone, never led) and the strongest baselines
CURVE_STRATEGIES = ("distill", "progressive", "replace", HEALED_DISTILL)
RIVALS = 2
STAGES: Mapping[str, str] = {
    "A": "movie-sentiment, 3 layers: every method (none + distill), graft x 6 strategies "
         "(none, finetune, distill, progressive, replace, distill+heal26)",
    "cost": "pipeline cost: distillation vs fine-tuning step (benchmarks/distill_cost.py); "
            "`layergraft analyze` on 2,000 examples of each teacher",
    "B": "movie-sentiment, 2 and 1 layers: the same grid",
    "C": "movie-rating, 3, 2 and 1 layers: the same grid",
    "speed": "speed: the teacher and graft's students of every depth timed together (bench)",
    "D": "budget curves at 1/4, 1/8, 1/2: graft's distilling strategies and the two "
         "strongest baselines, each point choosing on its own dev rows",
    "E": "seeds 1 and 2 for graft and the strongest baseline chosen at every budget point",
    "embeddings": "sentence-embedding students of all-MiniLM-L6-v2, 6 -> 3 and 6 -> 2 "
                  "(benchmarks/embeddings.py)",
    "H": f"retraining-free: every method healed {HEAL_STEPS} steps, no training, every task "
         "and depth; seeds 1 and 2 for graft and the strongest healed baseline",
}
STRATEGY_PLACEHOLDER = "<best strategy>"
BASELINE_PLACEHOLDER = "<strongest baseline>"


@dataclass(frozen=True)
class Planned:
    """One run of a stage; `pending` names the grid (task and depth) its method/strategy
    waits for, while it is not chosen yet."""

    stage: str
    task: str
    key: RunKey
    pending: str | None = None


def run_rows(rows: Sequence[Mapping]) -> list[Mapping]:
    """The rows of trained/evaluated students (offline.json also holds other kinds)."""
    return [r for r in rows if r.get("kind", "run") == "run"]


def teacher_table(rows: Sequence[Mapping]) -> str | None:
    """The teachers' rows as a Markdown table (None before any teacher is trained): every
    report of a suite shows what its retentions are measured against."""
    cells = [[r["task"], r["split"], r["metric"], f"{100 * r['value']:.2f}",
              f"{r['global_step']}", f"{r['train_seconds']:.0f}", format_cell(r, "size_bytes")]
             for r in rows if r.get("kind") == "teacher"]
    return markdown_from_cells(["task", "split", "metric", "value", "steps", "train s",
                                "on disk"], cells) if cells else None


def run_key(method: str, strategy: str, layers: int, seed: int = 0,
            budget: float = 1.0) -> RunKey:
    """The run of a strategy label (`distill+heal26`: distill, after 26 healing steps)."""
    base, _, steps = strategy.partition("+heal")
    return RunKey(method, base, layers, seed, budget, heal=int(steps or 0))


def grid(layers: Sequence[int]) -> list[RunKey]:
    """The full-budget grid at each depth: surgery-only runs first (minutes, no training)."""
    cells = [(m, s) for m in METHODS if m != "graft" for s in ("none", "distill")]
    cells += [("graft", s) for s in ("none", *TRAINED)]
    keys = [run_key(m, s, n) for n in layers for m, s in cells]
    order = {n: i for i, n in enumerate(layers)}
    return sorted(keys, key=lambda k: (order[k.layers], k.strategy != "none"))


def seed0_row(rows: Sequence[Mapping], task: str, layers: int, method: str, strategy: str,
              budget: float = 1.0, split: str = "dev") -> Mapping | None:
    """The seed-0 row on `split` of the task's target metric, at the full budget or a share."""
    for row in run_rows(rows):
        if (row["task"], row["layers"], row["method"], row["strategy"], row["seed"],
                row["split"], row["metric"], row["budget"]) == (
                task, layers, method, strategy, 0, split, TASKS[task], budget):
            return row
    return None


def dev_retention(rows: Sequence[Mapping], task: str, layers: int, method: str,
                  strategy: str, budget: float = 1.0) -> float | None:
    """Seed-0 retention on dev, where every choice of the suite is made."""
    row = seed0_row(rows, task, layers, method, strategy, budget)
    return None if row is None else row["retention"]


def dev_rank(rows: Sequence[Mapping], task: str, layers: int, method: str, strategy: str,
             budget: float = 1.0) -> tuple[float, float] | None:
    """What every choice of the suite maximises: seed-0 dev retention, an exact tie (the
    same count of right answers on dev) broken by dev agreement with the teacher, the
    fidelity a student is distilled for, rather than by the order strategies are listed in."""
    row = seed0_row(rows, task, layers, method, strategy, budget)
    return None if row is None else (row["retention"], row.get("agreement") or 0.0)


def best_strategy(rows: Sequence[Mapping], task: str, layers: int,
                  method: str) -> tuple[str, tuple[float, float]] | None:
    """The method's trained strategy of best `dev_rank`, with that rank, once all ran."""
    scores = {s: dev_rank(rows, task, layers, method, s)
              for s in GRID_STRATEGIES.get(method, ("distill",))}
    if any(v is None for v in scores.values()):
        return None
    best = max(scores, key=lambda s: scores[s])
    return best, scores[best]


def strongest_baseline(rows: Sequence[Mapping], task: str,
                       layers: int) -> tuple[str, str] | None:
    """The baseline (with its best strategy) of best `dev_rank` at the full budget."""
    picks = {m: best_strategy(rows, task, layers, m) for m in BASELINES}
    if any(p is None for p in picks.values()):
        return None
    method = max(picks, key=lambda m: picks[m][1])
    return method, picks[method][0]


def curve_configs(rows: Sequence[Mapping], task: str,
                  layers: int) -> list[tuple[str, str]] | None:
    """[(graft, its best strategy), (strongest baseline, its strategy)], or None if unknown."""
    graft, baseline = best_strategy(rows, task, layers, "graft"), strongest_baseline(
        rows, task, layers)
    if graft is None or baseline is None:
        return None
    return [("graft", graft[0]), baseline]


def curve_candidates(rows: Sequence[Mapping], task: str,
                     layers: int) -> list[tuple[str, str]] | None:
    """What a budget point chooses among (issue 13: graft's best strategy and the strongest
    baseline are chosen on dev at each point): graft with each of `CURVE_STRATEGIES`, and
    the `RIVALS` baselines of best full-budget `dev_rank`; None until the grid is done."""
    if curve_configs(rows, task, layers) is None:
        return None
    scores = {m: best_strategy(rows, task, layers, m) for m in BASELINES}
    rivals = sorted(scores, key=lambda m: scores[m][1], reverse=True)[:RIVALS]
    return [("graft", s) for s in CURVE_STRATEGIES] + [(m, scores[m][0]) for m in rivals]


def point_configs(rows: Sequence[Mapping], task: str, layers: int,
                  budget: float) -> list[tuple[str, str]] | None:
    """[(graft, strategy), (baseline, strategy)] chosen on dev at this budget point (the full
    budget: `curve_configs`), or None until every candidate at the point has run."""
    if budget in (0.0, 1.0):
        return curve_configs(rows, task, layers)
    candidates = curve_candidates(rows, task, layers)
    if candidates is None:
        return None
    scores = {c: dev_rank(rows, task, layers, *c, budget) for c in candidates}
    if any(v is None for v in scores.values()):
        return None
    best = {side: max((c for c in candidates if (c[0] == "graft") == side), key=scores.get)
            for side in (True, False)}
    return [best[True], best[False]]


def _curve(stage: str, rows: Sequence[Mapping]) -> list[Planned]:
    """Every candidate of every budget point, so that each point can choose on dev."""
    planned = []
    for budget in CURVE_BUDGETS:
        for task in TASKS:
            for layers in DEPTHS:
                candidates = curve_candidates(rows, task, layers)
                pending = None if candidates else f"{task} {layers}L"
                for method, strategy in candidates or [
                        ("graft", STRATEGY_PLACEHOLDER),
                        (BASELINE_PLACEHOLDER, STRATEGY_PLACEHOLDER)]:
                    planned.append(Planned(stage, task,
                                           run_key(method, strategy, layers, 0, budget),
                                           pending))
    return planned


def _followed(stage: str, rows: Sequence[Mapping], budgets: Sequence[float],
              seeds: Sequence[int]) -> list[Planned]:
    """Runs of each budget point's chosen configurations (0 = surgery only) x `seeds`."""
    planned = []
    for budget in budgets:
        for task in TASKS:
            for layers in DEPTHS:
                configs = point_configs(rows, task, layers, budget)
                pending = None if configs else (
                    f"{task} {layers}L" + (f" at {budget:g}" if budget not in (0, 1) else ""))
                configs = configs or [("graft", STRATEGY_PLACEHOLDER),
                                      (BASELINE_PLACEHOLDER, STRATEGY_PLACEHOLDER)]
                for seed in seeds:
                    for method, strategy in configs:
                        key = (RunKey(method, "none", layers, seed) if budget == 0 else
                               run_key(method, strategy, layers, seed, budget))
                        planned.append(Planned(stage, task, key, pending))
    return planned


def healed_key(method: str, layers: int, seed: int = 0) -> RunKey:
    return RunKey(method, "heal", layers, seed, heal=HEAL_STEPS)


def strongest_with(rows: Sequence[Mapping], task: str, layers: int, strategy: str,
                   methods: Sequence[str] = BASELINES) -> str | None:
    """The method of best `dev_rank` with one strategy (healing alone, say), once all ran."""
    scores = {m: dev_rank(rows, task, layers, m, strategy) for m in methods}
    if any(v is None for v in scores.values()):
        return None
    return max(scores, key=lambda m: scores[m])


def _healed(rows: Sequence[Mapping]) -> list[Planned]:
    """Every method healed at seed 0, then seeds 1 and 2 of graft and the strongest."""
    planned = [Planned("H", task, healed_key(m, n)) for task in TASKS for n in DEPTHS
               for m in METHODS]
    for task in TASKS:
        for layers in DEPTHS:
            rival = strongest_with(rows, task, layers, "heal")
            pending = None if rival else f"{task} {layers}L healed baselines"
            planned += [Planned("H", task, healed_key(m, layers, seed), pending)
                        for seed in EXTRA_SEEDS for m in ("graft", rival or BASELINE_PLACEHOLDER)]
    return planned


def plan_stage(stage: str, rows: Sequence[Mapping] = ()) -> list[Planned]:
    """The runs of one stage, in the order they should run."""
    sentiment, rating = TASKS
    if stage == "A":
        return [Planned("A", sentiment, k) for k in grid([3])]
    if stage == "B":
        return [Planned("B", sentiment, k) for k in grid([2, 1])]
    if stage == "C":
        return [Planned("C", rating, k) for k in grid(list(DEPTHS))]
    if stage == "D":
        return _curve("D", rows)
    if stage == "E":
        return _followed("E", rows, (1.0, *CURVE_BUDGETS, 0.0), EXTRA_SEEDS)
    if stage == "H":
        return _healed(rows)
    if stage in ("cost", "speed", "embeddings"):
        return []
    raise ValueError(f"unknown stage '{stage}': choose from {', '.join(STAGES)}")
