"""Surgery-only ablation of the graft options, scored on dev (never test): which importance
score, output-bias rule and LayerNorm rule start a grafted student closest to its teacher.

    python benchmarks/surgery_ablation.py [--task movie-sentiment] [--samples 1000]

Rows go to benchmarks/results/ablations.json (replacing this ablation's earlier rows), which
`benchmarks/render.py` shows in BENCHMARKS.md. One seed: surgery is deterministic given the
scores, and the scores are deterministic given the seeded sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages import TASKS

from layergraft.atomic import write_json_atomic
from layergraft.evaluation import evaluate_model
from layergraft.graft import graft_model
from layergraft.methods import GraftOptions
from layergraft.modelio import load_classifier
from layergraft.tasks import load_task
from layergraft.workflows import AnalysisSettings, measure

ROOT = Path(__file__).resolve().parent
ABLATION = "surgery only: graft options"
IMPORTANCE = (("michel", "task"), ("fisher", "task"), ("michel", "kl"), ("activation", "task"))
RULES = (("sum", "mean"), ("mean", "mean"), ("later", "later"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="movie-sentiment")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--layers", default="3,2,1")
    args = parser.parse_args()
    task = load_task(args.task)
    metric = TASKS[args.task]
    teacher_path = ROOT / "work" / "teachers" / args.task
    model, tokenizer = load_classifier(str(teacher_path))
    teacher = evaluate_model(model, tokenizer, task, "dev", progress=False)["metrics"][metric]

    def row(variant: str, layers: int, student) -> dict:
        value = evaluate_model(student, tokenizer, task, "dev", progress=False)["metrics"][metric]
        print(f"{layers} layers  {variant:<40} dev {metric} {value:.4f}", flush=True)
        return {"ablation": ABLATION, "variant": variant, "task": args.task, "layers": layers,
                "split": "dev", "metric": metric, "value": value, "teacher_value": teacher,
                "retention": value / teacher, "seed": 0, "samples": args.samples}

    rows = []
    depths = [int(d) for d in args.layers.split(",")]
    for layers in depths:
        student, _ = graft_model(model, layers=layers, method="drop-alternate")
        rows.append(row("drop-alternate (reference)", layers, student))
    for importance, loss in IMPORTANCE:
        settings = AnalysisSettings(samples=args.samples, importance=importance, loss=loss,
                                    progress=False)
        analysis = measure(model, tokenizer, task, settings)
        for layers in depths:
            for bias, norm in RULES:
                options = GraftOptions(bias=bias, norm=norm)
                student, _ = graft_model(model, layers=layers, options=options,
                                         **analysis.graft_inputs())
                rows.append(row(f"{importance}/{loss}, bias {bias}, norm {norm}", layers,
                                student))
    path = ROOT / "results" / "ablations.json"
    kept = [r for r in json.loads(path.read_text()) if r["ablation"] != ABLATION or
            r["task"] != args.task] if path.is_file() else []
    write_json_atomic(path, kept + rows)


if __name__ == "__main__":
    main()
