"""Issue 13's levers, scored on dev only (never test or out-of-domain), each against the same
reference at the same budget: local healing, module replacement, attention transfer by
provenance, the choice of graft options by reconstruction and progressive on one schedule.

    python benchmarks/lever_ablation.py [--set levers] [--task movie-sentiment]
        [--layers 3,2] [--seeds 0,1] [--variant NAME ...]
    python benchmarks/lever_ablation.py --set healing   # the healing set's rows, made first

The teacher is the suite's (benchmarks/work/teachers/TASK, made by benchmarks/offline.py's
recipe when missing). Each cell is a `compress` run (fp32, the suite's student settings, dev
and test scored, no out-of-domain sets, no timing) under benchmarks/work/lever-ablation/
(git-ignored, resumable); its dev rows, with the teacher's content fingerprint (each session
may fine-tune its own teacher, and BENCHMARKS.md never mixes teachers in one table), replace
their old ones in benchmarks/results/{heal,lever}_ablations.json after every cell. The
levers set trains for 1/4 of the suite's full budget: the compute target's budget. Heal
budgets are stated in steps of batch 32; by training/heal.py's cost rule a step that heals
every layer costs one distillation step, so 26 steps are 10% of one distillation epoch (265
steps), charged against the same budget.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lib.paths import BENCHMARKS
from lib.stages import FULL_BUDGET, TASKS

from layergraft.pipeline.compare import RunKey, record_rows
from layergraft.pipeline.compress import compress
from layergraft.surgery.methods import GraftOptions
from layergraft.training.budget import Budget
from layergraft.training.distill import DistillConfig
from layergraft.training.heal import HealConfig
from suites.graft_ablation import replace_rows
from suites.offline import Suite, make_teacher

ROOT = BENCHMARKS
TENTH_EPOCH = 26  # heal steps of batch 32: 10% of one distillation epoch of movie-sentiment


@dataclass(frozen=True)
class Cell:
    """One recipe: a method, a strategy, healing, and the share of the suite's full budget."""

    method: str
    strategy: str = "heal"
    heal_steps: int = TENTH_EPOCH
    heal_lr: float = 1e-4
    budget: float = 0.0  # of FULL_BUDGET, for the training strategies
    options: GraftOptions | None = None
    distill: DistillConfig | None = None
    progressive_schedule: str = "per-stage"

    def heal(self) -> HealConfig:
        return HealConfig(steps=self.heal_steps, learning_rate=self.heal_lr)


ALL_SOURCES = GraftOptions(max_sources=0)
HEALING: Mapping[str, Cell] = {
    "graft, surgery only": Cell("graft", "none", 0),
    "drop-alternate, surgery only": Cell("drop-alternate", "none", 0),
    "graft, heal 26 steps, lr 1e-4": Cell("graft"),
    "graft, heal 26 steps, lr 3e-4": Cell("graft", heal_lr=3e-4),
    "graft, heal 26 steps, lr 1e-3": Cell("graft", heal_lr=1e-3),
    "drop-alternate, heal 26 steps, lr 1e-4": Cell("drop-alternate"),
    "drop-alternate, heal 26 steps, lr 3e-4": Cell("drop-alternate", heal_lr=3e-4),
    "drop-alternate, heal 26 steps, lr 1e-3": Cell("drop-alternate", heal_lr=1e-3),
    "graft, heal 26 steps, lr 3e-3": Cell("graft", heal_lr=3e-3),
    "drop-alternate, heal 26 steps, lr 3e-3": Cell("drop-alternate", heal_lr=3e-3),
    "graft, heal 26 steps, lr 1e-2": Cell("graft", heal_lr=1e-2),
    "drop-alternate, heal 26 steps, lr 1e-2": Cell("drop-alternate", heal_lr=1e-2),
    "graft all sources, heal 26 steps, lr 3e-4": Cell("graft", heal_lr=3e-4,
                                                      options=ALL_SOURCES),
    "graft, distill 1/4": Cell("graft", "distill", 0, budget=0.25),
    "drop-alternate, distill 1/4": Cell("drop-alternate", "distill", 0, budget=0.25),
    "graft, heal 26 + distill 1/4": Cell("graft", "distill", heal_lr=3e-4, budget=0.25),
    "drop-alternate, heal 26 + distill 1/4": Cell("drop-alternate", "distill", heal_lr=3e-4,
                                                  budget=0.25),
}
CHOSEN = GraftOptions(choose="reconstruction")
ATTENTION = DistillConfig(attention_weight=1.0)
LEVERS: Mapping[str, Cell] = {
    "drop-alternate, distill 1/4": Cell("drop-alternate", "distill", 0, budget=0.25),
    "graft, distill 1/4": Cell("graft", "distill", 0, budget=0.25),
    "graft, heal 26 + distill 1/4": Cell("graft", "distill", heal_lr=3e-4, budget=0.25),
    "drop-alternate, heal 26 + distill 1/4": Cell("drop-alternate", "distill", heal_lr=3e-4,
                                                  budget=0.25),
    "graft, replace 1/4": Cell("graft", "replace", 0, budget=0.25),
    "drop-alternate, replace 1/4": Cell("drop-alternate", "replace", 0, budget=0.25),
    "graft, heal 26 at 3e-3 + distill 1/4": Cell("graft", "distill", heal_lr=3e-3, budget=0.25),
    "drop-alternate, heal 26 at 3e-3 + distill 1/4": Cell("drop-alternate", "distill",
                                                          heal_lr=3e-3, budget=0.25),
    "graft, distill 1/4 + attention 1.0": Cell("graft", "distill", 0, budget=0.25,
                                               distill=ATTENTION),
    "graft chosen by reconstruction, surgery only": Cell("graft", "none", 0, options=CHOSEN),
    "graft chosen by reconstruction, distill 1/4": Cell("graft", "distill", 0, budget=0.25,
                                                        options=CHOSEN),
    "graft chosen by reconstruction, distill 1/4 + attention 1.0": Cell(
        "graft", "distill", 0, budget=0.25, options=CHOSEN, distill=ATTENTION),
    "graft, progressive 1/4": Cell("graft", "progressive", 0, budget=0.25),
    "graft, progressive 1/4, one schedule": Cell("graft", "progressive", 0, budget=0.25,
                                                 progressive_schedule="one"),
}
SETS = {"healing": (HEALING, "heal_ablations.json"), "levers": (LEVERS, "lever_ablations.json")}


def cell_dir(task: str, name: str, key: RunKey) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return ROOT / "work" / "lever-ablation" / task / f"{slug}-{key.name}"


def run_cell(task: str, cells: str, name: str, layers: int, seed: int,
             teacher: Path) -> list[dict]:
    cell = SETS[cells][0][name]
    key = RunKey(cell.method, cell.strategy, layers, seed, cell.budget or 1.0)
    budget = key.scaled(Budget.parse(FULL_BUDGET)) if cell.budget else FULL_BUDGET
    record = compress(str(teacher), task, layers=layers, method=cell.method,
                      strategy=cell.strategy, seed=seed, budget=budget,
                      out_dir=cell_dir(task, name, key), precision="fp32",
                      heal=cell.heal() if cell.heal_steps else None,
                      graft_options=cell.options, distill=cell.distill,
                      progressive_schedule=cell.progressive_schedule,
                      cache_dir=ROOT / "work" / "cache",
                      speed=False, ood=False, progress=False)
    rows = [r for r in record_rows(record, cell.budget or 1.0)
            if r["split"] == "dev" and r["metric"] == TASKS[task]]
    heal = record.get("heal") or {}
    return [{**r, "ablation": cells, "variant": name, "heal_charge": heal.get("charge", 0),
             "precision": record["runtime"]["precision"],
             "teacher_content": record["settings"]["teacher_content"],
             "heal_seconds": heal.get("seconds"), "train_seconds": record["train"]["seconds"]}
            for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="cells", default="levers", choices=list(SETS))
    parser.add_argument("--task", default="movie-sentiment", choices=list(TASKS))
    parser.add_argument("--layers", default="3,2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variant", action="append",
                        help="run only this cell of the set (repeatable); default: all")
    args = parser.parse_args()
    cells, results = SETS[args.cells]
    unknown = sorted(set(args.variant or ()) - set(cells))
    if unknown:
        parser.error(f"no cell {', '.join(unknown)} in set {args.cells}: choose from "
                     + "; ".join(cells))
    teacher = make_teacher(Suite(), args.task)
    path = ROOT / "results" / results
    for seed in (int(s) for s in args.seeds.split(",")):
        for layers in (int(n) for n in args.layers.split(",")):
            for name in args.variant or list(cells):
                rows = run_cell(args.task, args.cells, name, layers, seed, teacher)
                print(f"{layers}L seed {seed} {name:<44} dev {rows[0]['value']:.4f} "
                      f"agreement {rows[0]['agreement']:.4f}", flush=True)
                replace_rows(path, rows)

