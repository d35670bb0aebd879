"""Issue 32's levers at 12 -> 6 layers: all-mpnet-base-v2 on movie-sentiment, each lever a
`compress` cell at 1/4 of the 12-layer stage's full budget (one distillation epoch), scored
on dev (the choice) and test (reported, never chosen on), no out-of-domain sets, no timing.

    python benchmarks/mpnet_levers.py              # every cell not yet done, in order
    python benchmarks/mpnet_levers.py --dry-run    # what is done and what is left
    python benchmarks/mpnet_levers.py --seeds 0,1

Start one process per core (OMP_NUM_THREADS=1 each): cells are claimed by locks, rows land
in benchmarks/results/mpnet_levers.json after every cell (with the teacher's content
fingerprint: BENCHMARKS.md never mixes teachers in one table), run folders under
benchmarks/work/mpnet-levers/ (git-ignored, resumable). The teacher is the 12-layer stage's
(benchmarks/work/mpnet/teachers/movie-sentiment, fine-tuned by its recipe when missing).
Cells are ordered so that the most telling land first: the learning rate of graft and of
the strongest baseline (drop-top), then plans that keep a bottom block intact, then the
other levers at the plan and rate that led. Every cell runs with the collapse guard off, so
the learning-rate curve shows what each rate does by itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lib.jsonstore import claim, read_rows, update_rows
from lib.measure import cpu_name
from lib.mpnet_plan import FULL_BUDGET, TASK
from lib.paths import BENCHMARKS

from layergraft.pipeline.compare import RunKey, record_rows
from layergraft.pipeline.compress import compress
from layergraft.training.budget import Budget
from layergraft.training.distill import DistillConfig
from layergraft.training.heal import HealConfig
from layergraft.training.train import student_training
from suites.mpnet import SUITE
from suites.offline import make_teacher

ROOT = BENCHMARKS
RESULTS = ROOT / "results" / "mpnet_levers.json"
WORK = ROOT / "work" / "mpnet-levers"
LAYERS, SHARE = 6, 0.25
CALIBRATION = 256  # examples of the training split for recalibration


@dataclass(frozen=True)
class Cell:
    """One recipe at 12 -> 6: method, strategy, plan, rates and levers."""

    method: str
    learning_rate: float
    plan: str | None = None  # explicit spans; None: the method's own (uniform pairs)
    strategy: str = "distill"
    inherited_lr: float | None = None
    layer_decay: float | None = None
    recalibrate: int = 0
    heal_steps: int = 0
    distill: Mapping = field(default_factory=dict)

    def options(self, seed: int, out: Path) -> dict:
        """compress's keyword arguments for this cell."""
        training = replace(student_training(self.learning_rate, group_by_length=True),
                           inherited_learning_rate=self.inherited_lr,
                           layer_decay=self.layer_decay)
        key = RunKey(self.method, self.strategy, LAYERS, seed, SHARE)
        return {"layers": LAYERS, "method": self.method, "strategy": self.strategy,
                "seed": seed, "budget": key.scaled(Budget.parse(FULL_BUDGET)),
                "out_dir": out, "precision": SUITE.precision, "cache_dir": SUITE.work / "cache",
                "training": training, "pairs": self.plan,
                "recalibrate_samples": self.recalibrate,
                "heal": HealConfig(steps=self.heal_steps, learning_rate=3e-4)
                if self.heal_steps else None,
                "distill": DistillConfig(**self.distill) if self.distill else None,
                "speed": False, "ood": False, "progress": False, "replace_other_runs": True}


INTACT = {4: "4-7,8-11", 3: "3-5,6-8,9-11", 5: "5-11", 2: "2-3,4-5,6-8,9-11"}
CELLS: Mapping[str, Cell] = {
    "graft, lr 1e-4": Cell("graft", 1e-4),
    "drop-top, lr 1e-4": Cell("drop-top", 1e-4),
    "graft intact 0-3, lr 1e-4": Cell("graft", 1e-4, INTACT[4]),
    "graft, lr 5e-5": Cell("graft", 5e-5),
    "drop-top, lr 5e-5": Cell("drop-top", 5e-5),
    "graft intact 0-3, lr 5e-5": Cell("graft", 5e-5, INTACT[4]),
    "graft intact 0-2, lr 1e-4": Cell("graft", 1e-4, INTACT[3]),
    "graft intact 0-4, lr 1e-4": Cell("graft", 1e-4, INTACT[5]),
    "graft, lr 2e-4": Cell("graft", 2e-4),
    "drop-top, lr 2e-4": Cell("drop-top", 2e-4),
    "graft intact 0-1, lr 1e-4": Cell("graft", 1e-4, INTACT[2]),
    "graft intact 0-3, lr 2e-4 new / 5e-5 inherited": Cell("graft", 2e-4, INTACT[4],
                                                           inherited_lr=5e-5),
    "graft intact 0-3, lr 1e-4, recalibrated": Cell("graft", 1e-4, INTACT[4],
                                                    recalibrate=CALIBRATION),
    "graft, lr 1e-4, recalibrated": Cell("graft", 1e-4, recalibrate=CALIBRATION),
    "graft, lr 2e-5": Cell("graft", 2e-5),
    "drop-top, lr 2e-5": Cell("drop-top", 2e-5),
    "graft, lr 4e-4": Cell("graft", 4e-4),
    "drop-top, lr 4e-4": Cell("drop-top", 4e-4),
    "graft intact 0-3, lr 1e-4, hidden 1.0": Cell("graft", 1e-4, INTACT[4],
                                                  distill={"hidden_weight": 1.0}),
    "graft intact 0-3, lr 1e-4, heal 26": Cell("graft", 1e-4, INTACT[4], heal_steps=26),
    "graft intact 0-3, lr 1e-4, replace": Cell("graft", 1e-4, INTACT[4], strategy="replace"),
    "drop-similar, lr 1e-4": Cell("drop-similar", 1e-4),
    "graft, lr 2e-4, layer decay 0.8": Cell("graft", 2e-4, layer_decay=0.8),
    "graft intact 0-3, lr 2e-4, layer decay 0.8": Cell("graft", 2e-4, INTACT[4],
                                                       layer_decay=0.8),
}


def cell_dir(name: str, seed: int) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return WORK / f"{slug}-s{seed}"


def identity(row: Mapping) -> tuple:
    return row["variant"], row["seed"]


def done(rows: Sequence[Mapping], name: str, seed: int) -> bool:
    return any(identity(r) == (name, seed) for r in rows)


def run_cell(name: str, seed: int, teacher: Path) -> list[dict]:
    cell = CELLS[name]
    record = compress(str(teacher), TASK, **cell.options(seed, cell_dir(name, seed)))
    stages = record["train"]["stages"]
    return [{**row, "variant": name, "plan": cell.plan or "uniform",
             "learning_rate": cell.learning_rate, "inherited_lr": cell.inherited_lr,
             "teacher_content": record["settings"]["teacher_content"],
             "restarts": sum(len(s.get("restarts", ())) for s in stages),
             "run_seconds": record["seconds"],
             "cpu": f"{cpu_name()} ({record['runtime'].get('cpu_capability')})"}
            for row in record_rows(record, SHARE) if row["split"] in ("dev", "test")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variant", action="append", choices=list(CELLS),
                        help="only this cell (repeatable); default: every cell")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    todo = [(name, int(seed)) for seed in args.seeds.split(",")
            for name in args.variant or list(CELLS)]
    if args.dry_run:
        rows = read_rows(RESULTS)
        for name, seed in todo:
            print(f"{'done' if done(rows, name, seed) else 'to do':<6} seed {seed}  {name}")
        return
    teacher = make_teacher(SUITE, TASK)
    for name, seed in todo:
        if done(read_rows(RESULTS), name, seed):
            continue
        with claim(WORK / "claims" / f"{cell_dir(name, seed).name}.lock") as mine:
            if not mine:
                continue  # another process runs it
            rows = run_cell(name, seed, teacher)
            update_rows(RESULTS, lambda old, rows=rows, cell=(name, seed): [
                r for r in old if identity(r) != cell] + rows)
            dev = next(r for r in rows if r["split"] == "dev" and r["metric"] == "accuracy")
            print(f"seed {seed} {name:<50} dev retention {100 * dev['retention']:.2f}",
                  flush=True)

