"""Which distillation loss weights to default to: `compress` once per DistillConfig variant.

Same teacher, task, method, depth, budget and seed for every variant; one JSON line per
run (dev/test metrics, agreement, training time) is appended to OUT as it finishes.

    python benchmarks/distill_weights.py TEACHER OUT.jsonl --task movie-sentiment \
        --layers 3 --budget "3 epochs" --precision auto
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from layergraft.pipeline.compress import compress
from layergraft.training.distill import DistillConfig

VARIANTS = {
    "T1": DistillConfig(temperature=1.0),
    "T2": DistillConfig(temperature=2.0),
    "T4": DistillConfig(temperature=4.0),
    "T2+task0.5": DistillConfig(temperature=2.0, task_weight=0.5),
    "T2+hidden1": DistillConfig(temperature=2.0, hidden_weight=1.0),
    "T2+hidden1+task0.5": DistillConfig(temperature=2.0, hidden_weight=1.0, task_weight=0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("teacher")
    parser.add_argument("out")
    parser.add_argument("--task", default="movie-sentiment")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--method", default="graft")
    parser.add_argument("--budget", default="3 epochs")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work", default="runs/distill-weights")
    args = parser.parse_args()
    for name in args.variants.split(","):
        record = compress(args.teacher, args.task, layers=args.layers, method=args.method,
                          out_dir=Path(args.work) / name, budget=args.budget,
                          precision=args.precision,
                          distill=VARIANTS[name], speed=False, progress=False)
        row = {"variant": name, "config": VARIANTS[name].to_dict(),
               "train_seconds": record["train"]["seconds"],
               **{split: {"metrics": record[split]["metrics"],
                          "agreement": record[split]["agreement"],
                          "teacher": record[split]["teacher"]}
                  for split in ("dev", "test") if split in record}}
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

