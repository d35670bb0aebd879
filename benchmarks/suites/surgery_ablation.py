"""Surgery-only ablations, scored on dev (never test): which importance score, output-bias
rule and LayerNorm rule start a grafted student closest to its teacher (`options`), and what
a least-squares refit of the FFN output projections adds to each method (`refit`).

    python benchmarks/surgery_ablation.py [--task movie-sentiment] [--samples 1000]
        [--part options --part refit]

Rows go to benchmarks/results/ablations.json (replacing this ablation's earlier rows), which
`benchmarks/render.py` shows in BENCHMARKS.md. One seed: surgery is deterministic given the
scores, and the scores are deterministic given the seeded sample.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from lib.jsonstore import update_rows
from lib.paths import BENCHMARKS
from lib.stages import TASKS

from layergraft.data.tasks import load_task
from layergraft.models import load_classifier
from layergraft.objectives.task.evaluation import evaluate_model
from layergraft.pipeline.workflows import refit_after_surgery
from layergraft.scoring.analysis import AnalysisSettings, measure
from layergraft.surgery.graft import graft_model
from layergraft.surgery.methods import GraftOptions

ROOT = BENCHMARKS
ABLATION = "surgery only: graft options"
REFIT_ABLATION = "surgery only: least-squares refit"
REFIT_METHODS = ("graft", "drop-alternate", "drop-top", "random")
REFIT_SAMPLES = 512
IMPORTANCE = (("michel", "task"), ("fisher", "task"), ("michel", "kl"), ("activation", "task"))
RULES = (("sum", "mean"), ("mean", "mean"), ("later", "later"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="movie-sentiment")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--layers", default="3,2,1")
    parser.add_argument("--part", action="append", choices=("options", "refit"),
                        help="run only this part (repeatable); default: both")
    args = parser.parse_args()
    task = load_task(args.task)
    metric = TASKS[args.task]
    teacher_path = ROOT / "work" / "teachers" / args.task
    model, tokenizer = load_classifier(str(teacher_path))
    teacher = evaluate_model(model, tokenizer, task, "dev", progress=False)["metrics"][metric]

    def row(ablation: str, variant: str, layers: int, student) -> dict:
        value = evaluate_model(student, tokenizer, task, "dev", progress=False)["metrics"][metric]
        print(f"{layers} layers  {variant:<40} dev {metric} {value:.4f}", flush=True)
        return {"ablation": ablation, "variant": variant, "task": args.task, "layers": layers,
                "split": "dev", "metric": metric, "value": value, "teacher_value": teacher,
                "retention": value / teacher, "seed": 0, "samples": args.samples}

    depths = [int(d) for d in args.layers.split(",")]
    parts = args.part or ["options", "refit"]
    if "options" in parts:
        rows = [row(ABLATION, "drop-alternate (reference)", layers,
                    graft_model(model, layers=layers, method="drop-alternate")[0])
                for layers in depths]
        for importance, loss in IMPORTANCE:
            settings = AnalysisSettings(samples=args.samples, importance=importance, loss=loss,
                                        progress=False)
            analysis = measure(model, tokenizer, task, settings)
            for layers in depths:
                for bias, norm in RULES:  # all sources: as measured before max_sources existed
                    options = GraftOptions(bias=bias, norm=norm, max_sources=0)
                    student, _ = graft_model(model, layers=layers, options=options,
                                             **analysis.graft_inputs())
                    rows.append(row(ABLATION, f"{importance}/{loss}, bias {bias}, norm {norm}",
                                    layers, student))
        replace_ablation(ABLATION, args.task, rows)
    if "refit" in parts:
        settings = AnalysisSettings(samples=args.samples, progress=False)
        analysis = measure(model, tokenizer, task, settings)
        fit = replace(settings, samples=REFIT_SAMPLES)
        rows = []
        for layers in depths:
            for method in REFIT_METHODS:
                student, manifest = graft_model(model, layers=layers, method=method,
                                                **analysis.graft_inputs())
                rows.append(row(REFIT_ABLATION, f"{method}, surgery only", layers, student))
                refit_after_surgery(student, model, manifest.steps[-1], task, tokenizer, fit)
                rows.append(row(REFIT_ABLATION, f"{method}, refit on {REFIT_SAMPLES} train "
                                "examples", layers, student))
        replace_ablation(REFIT_ABLATION, args.task, rows)


def replace_ablation(ablation: str, task: str, rows: list[dict]) -> None:
    update_rows(ROOT / "results" / "ablations.json", lambda old: [
        r for r in old if r["ablation"] != ablation or r["task"] != task] + rows)

