"""Graft options after distillation, scored on dev only (never test or out-of-domain): which
output-bias rule and how many source layers per group give the best student once trained,
against the reference drop-alternate at the same budget.

    python benchmarks/graft_ablation.py [--task movie-sentiment] [--layers 2,1]
        [--budget 0.25] [--seeds 0,1] [--variant NAME ...]

Each cell is a `compress` run (distill, the suite's settings) under
benchmarks/work/ablation/ (git-ignored, resumable: a finished cell is not redone). After every
cell its dev rows replace its old ones in benchmarks/results/ablations.json, which
`benchmarks/render.py` shows in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stages import FULL_BUDGET, TASKS

from layergraft.atomic import write_json_atomic
from layergraft.compare import RunKey, record_rows
from layergraft.distill import DistillConfig
from layergraft.methods import GraftOptions
from layergraft.strategies import Budget, compress
from layergraft.train import TrainConfig

ROOT = Path(__file__).resolve().parent
ABLATION = "after distillation: graft options"


@dataclass(frozen=True)
class Variant:
    """One cell's recipe; anything left at None/0 is the package default."""

    method: str
    options: GraftOptions | None = None
    learning_rate: float | None = None
    hidden_weight: float = 0.0

    def training(self) -> TrainConfig | None:
        return (None if self.learning_rate is None else
                TrainConfig(output_dir="", learning_rate=self.learning_rate))

    def distill(self) -> DistillConfig:
        return DistillConfig(hidden_weight=self.hidden_weight)


VARIANTS: Mapping[str, Variant] = {
    "drop-alternate (reference)": Variant("drop-alternate"),
    "graft, bias sum": Variant("graft", GraftOptions(bias="sum")),
    "graft, bias mean": Variant("graft", GraftOptions(bias="mean")),
    "graft, bias mean, normalised scores": Variant("graft", GraftOptions(
        bias="mean", normalize_scores=True)),
    "graft, bias mean, top 2 sources": Variant("graft", GraftOptions(bias="mean", max_sources=2)),
    "graft, bias mean, top 3 sources": Variant("graft", GraftOptions(bias="mean", max_sources=3)),
    "drop-alternate, lr 1e-4": Variant("drop-alternate", learning_rate=1e-4),
    "graft, lr 1e-4": Variant("graft", learning_rate=1e-4),
    "graft, lr 2e-4": Variant("graft", learning_rate=2e-4),
    "graft, hidden 1.0": Variant("graft", hidden_weight=1.0),
}


def cell_dir(task: str, variant: str, key: RunKey) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in variant).strip("-")
    return ROOT / "work" / "ablation" / task / f"{slug}-{key.name}"


def dev_rows(record: Mapping, variant: str, budget: float, metric: str) -> list[dict]:
    rows = [r for r in record_rows(record, budget) if r["split"] == "dev" and r["metric"] == metric]
    return [{**r, "ablation": ABLATION, "variant": variant} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="movie-sentiment")
    parser.add_argument("--layers", default="2,1")
    parser.add_argument("--budget", type=float, default=0.25,
                        help=f"fraction of the suite's full budget ({FULL_BUDGET})")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS),
                        help="run only this variant (repeatable); default: all")
    args = parser.parse_args()
    teacher = ROOT / "work" / "teachers" / args.task
    path = ROOT / "results" / "ablations.json"
    full = Budget.parse(FULL_BUDGET)
    for seed in (int(s) for s in args.seeds.split(",")):
        for layers in (int(n) for n in args.layers.split(",")):
            for variant in args.variant or list(VARIANTS):
                recipe = VARIANTS[variant]
                key = RunKey(recipe.method, "distill", layers, seed, args.budget)
                record = compress(str(teacher), args.task, layers=layers, method=recipe.method,
                                  strategy="distill", seed=seed, budget=key.scaled(full),
                                  out_dir=cell_dir(args.task, variant, key), bf16=True,
                                  graft_options=recipe.options, distill=recipe.distill(),
                                  training=recipe.training(), cache_dir=ROOT / "work" / "cache",
                                  speed=False, progress=False)
                rows = dev_rows(record, variant, args.budget, TASKS[args.task])
                print(f"{layers}L seed {seed} {variant:<34} dev {rows[0]['value']:.4f} "
                      f"agreement {rows[0]['agreement']:.4f}", flush=True)
                replace_rows(path, rows)


def replace_rows(path: Path, rows: list[dict]) -> None:
    """Swap in this cell's rows; locked, since one process per seed may run at once."""
    def identity(row: Mapping) -> tuple:
        return (row["ablation"], row["task"], row["variant"], row["layers"], row.get("seed"),
                row.get("budget"))

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.is_file() else []
        same = {identity(r) for r in rows}
        write_json_atomic(path, [r for r in old if identity(r) not in same] + rows)


if __name__ == "__main__":
    main()
