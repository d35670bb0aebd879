"""Graft options and student training after distillation, scored on dev only (never test or
out-of-domain): output-bias rule, source layers per group, learning rate, temperature,
hidden loss and refit, against keep-alternate (drop-alternate) at the same budget.

    python benchmarks/graft_ablation.py [--task movie-sentiment] [--layers 2,1]
        [--budget 0.25] [--seeds 0,1] [--variant NAME ...]

Each cell is a `compress` run (distill, the suite's settings) under
benchmarks/work/ablation/ (git-ignored, resumable: a finished cell is not redone). After every
cell its dev rows replace its old ones in benchmarks/results/ablations.json, which
`benchmarks/render.py` shows in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lib.jsonstore import update_rows
from lib.paths import BENCHMARKS
from lib.stages import FULL_BUDGET, TASKS

from layergraft.pipeline.compare import RunKey, record_rows
from layergraft.pipeline.compress import compress
from layergraft.surgery.methods import GraftOptions
from layergraft.training.budget import Budget
from layergraft.training.distill import DistillConfig
from layergraft.training.train import TrainConfig

ROOT = BENCHMARKS


@dataclass(frozen=True)
class Variant:
    """One cell's recipe, spelled out in full (5e-5 is fine-tuning's rate, the student's
    default when the first cells ran), so that later changes of the package defaults
    leave every finished cell valid and reproducible."""

    method: str
    options: GraftOptions | None = None
    learning_rate: float = 5e-5
    hidden_weight: float = 0.0
    temperature: float = 2.0
    refit_samples: int = 0

    def training(self) -> TrainConfig:
        return TrainConfig(output_dir="", learning_rate=self.learning_rate)

    def distill(self) -> DistillConfig:
        return DistillConfig(temperature=self.temperature, hidden_weight=self.hidden_weight)


ALL = GraftOptions(bias="sum", max_sources=0)
TOP2 = GraftOptions(bias="sum", max_sources=2)
MEAN2 = GraftOptions(bias="mean", max_sources=2)
VARIANTS: Mapping[str, Variant] = {
    "drop-alternate (reference)": Variant("drop-alternate"),
    "graft, bias sum": Variant("graft", ALL),
    "graft, bias mean": Variant("graft", GraftOptions(bias="mean", max_sources=0)),
    "graft, bias mean, normalised scores": Variant("graft", GraftOptions(
        bias="mean", normalize_scores=True, max_sources=0)),
    "graft, bias mean, top 2 sources": Variant("graft", GraftOptions(bias="mean", max_sources=2)),
    "graft, bias mean, top 3 sources": Variant("graft", GraftOptions(bias="mean", max_sources=3)),
    "graft, bias sum, top 2 sources": Variant("graft", TOP2),
    "drop-alternate, lr 1e-4": Variant("drop-alternate", learning_rate=1e-4),
    "graft, top 2, lr 1e-4": Variant("graft", TOP2, learning_rate=1e-4),
    "graft, top 2, lr 2e-4": Variant("graft", TOP2, learning_rate=2e-4),
    "graft, top 2, hidden 1.0": Variant("graft", TOP2, hidden_weight=1.0),
    "drop-alternate, lr 2e-4": Variant("drop-alternate", learning_rate=2e-4),
    "graft, bias mean, top 2, lr 2e-4": Variant("graft", MEAN2, learning_rate=2e-4),
    "graft, bias mean, top 2, lr 4e-4": Variant("graft", MEAN2, learning_rate=4e-4),
    "graft, bias mean, top 2, lr 8e-4": Variant("graft", MEAN2, learning_rate=8e-4),
    "drop-alternate, lr 4e-4": Variant("drop-alternate", learning_rate=4e-4),
    "drop-alternate, lr 8e-4": Variant("drop-alternate", learning_rate=8e-4),
    "graft, bias mean, top 2, lr 4e-4, refit 512": Variant("graft", MEAN2, learning_rate=4e-4,
                                                          refit_samples=512),
    "drop-alternate, lr 4e-4, refit 512": Variant("drop-alternate", learning_rate=4e-4,
                                                  refit_samples=512),
    "graft, bias mean, top 2, lr 4e-4, T 1": Variant("graft", MEAN2, learning_rate=4e-4,
                                                     temperature=1.0),
    "graft, bias mean, top 2, lr 4e-4, T 4": Variant("graft", MEAN2, learning_rate=4e-4,
                                                     temperature=4.0),
    "graft, bias mean, top 2, lr 4e-4, hidden 1.0": Variant("graft", MEAN2, learning_rate=4e-4,
                                                            hidden_weight=1.0),
    "graft, bias mean, top 2, lr 4e-4, normalised scores": Variant(
        "graft", GraftOptions(bias="mean", normalize_scores=True, max_sources=2),
        learning_rate=4e-4),
}


def cell_dir(task: str, variant: str, key: RunKey) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in variant).strip("-")
    return ROOT / "work" / "ablation" / task / f"{slug}-{key.name}"


def dev_rows(record: Mapping, variant: str, budget: float, metric: str) -> list[dict]:
    rows = [r for r in record_rows(record, budget) if r["split"] == "dev" and r["metric"] == metric]
    label = f"distilled for {budget:g} of {FULL_BUDGET}"
    return [{**r, "ablation": label, "variant": variant} for r in rows]


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
                                  out_dir=cell_dir(args.task, variant, key),
                                  precision="fp32",
                                  graft_options=recipe.options, distill=recipe.distill(),
                                  training=recipe.training(), cache_dir=ROOT / "work" / "cache",
                                  refit_samples=recipe.refit_samples,
                                  speed=False, progress=False)
                rows = dev_rows(record, variant, args.budget, TASKS[args.task])
                print(f"{layers}L seed {seed} {variant:<34} dev {rows[0]['value']:.4f} "
                      f"agreement {rows[0]['agreement']:.4f}", flush=True)
                replace_rows(path, rows)


def replace_rows(path: Path, rows: list[dict]) -> None:
    """Swap in this cell's rows (one process per seed may run at once)."""
    def identity(row: Mapping) -> tuple:
        return (row["ablation"], row["task"], row["variant"], row["layers"], row.get("seed"),
                row.get("budget"))

    same = {identity(r) for r in rows}
    update_rows(path, lambda old: [r for r in old if identity(r) not in same] + rows)

