"""The `task` objective: a sequence classifier (or regressor) on a labelled task.

- `run`: a compress run's identity and its session (surgery, training, evaluation, speed)
- `context`: the run's work on its loaded teacher: surgery, healing, progressive, training
- `repair`: refit and recalibration after surgery; `healing`: the healing stage
- `assess`: the student against its teacher (metrics, retention, agreement, speed)
- `evaluation`: score any classifier on a task split
- `report`: a grid's rows and report files

Models are stock `AutoModelForSequenceClassification` folders; the teacher's logits (and
hidden states) are cached; importance takes the task's loss; speed is examples per second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from layergraft.objectives.base import Objective
from layergraft.objectives.strategies import GRAFT_GRID


class TaskObjective(Objective):
    name = "task"
    speed_unit = "examples/s"
    graft_grid = GRAFT_GRID
    times_shapes = True  # one speed per shape in a grid's report (pipeline.shape_speed)
    # the strongest drops of BENCHMARKS.md (drop-top at 12 layers, drop-alternate at 6 -> 3
    # and 2) beside graft: the user's one command returns the best of them on dev
    auto_methods = ("graft", "drop-top", "drop-alternate")
    default_method = "auto"

    def run(self, teacher: str, data, *, layers: int, out: Path, dry_run: bool = False,
            texts=None, method: str = "graft", strategy: str = "distill",
            budget="3 epochs", seed: int = 0, precision: str = "auto", device: str = "auto",
            distill=None, graft_options=None, analysis=None, training=None, cache_dir=None,
            speed: bool = True, ood: bool = True, progress: bool = True,
            refit_samples: int = 0, heal=None, pairs: str | None = None,
            allow_untrained_head: bool = False, progressive_schedule: str = "per-stage",
            recalibrate_samples: int = 0, guard=None):
        from layergraft.data.tasks import as_source
        from layergraft.errors import LayergraftError
        from layergraft.models import untrained_head
        from layergraft.objectives.strategies import (
            check_model_kind,
            check_request,
            normalized_spans,
        )
        from layergraft.objectives.task.run import _Run
        from layergraft.runtime import Runtime
        from layergraft.scoring.analysis import AnalysisSettings
        from layergraft.surgery.methods import GraftOptions
        from layergraft.training.budget import Budget
        from layergraft.training.distill import DistillConfig
        from layergraft.training.guard import CollapseGuard
        from layergraft.training.heal import HealConfig
        from layergraft.training.train import student_training
        from layergraft.utils import cache_root

        if data is None or texts is not None:
            raise LayergraftError("--objective task trains on a labelled --task (and takes no "
                                  "--texts; that is --objective embedding)")
        heal = heal or HealConfig()
        check_request(method, strategy, pairs, heal, progressive_schedule, graft_options)
        check_model_kind(str(teacher), "task", method)
        if not dry_run:
            untrained_head(teacher, allow_untrained_head)  # refused before anything else
        return _Run(teacher_path=str(teacher), source=as_source(data), layers=int(layers),
                    method=method, strategy=strategy, seed=seed,
                    budget=Budget.parse(budget, ("epochs", "steps")),
                    resolved=Runtime.resolve(device, precision),
                    distill=distill or DistillConfig(),
                    options=graft_options or GraftOptions(),
                    analysis=replace(analysis or AnalysisSettings(), progress=progress),
                    training=training or student_training(), out=Path(out),
                    cache=cache_root(cache_dir), speed=speed, ood=ood, progress=progress,
                    objective=self, refit_samples=refit_samples, heal=heal,
                    pairs=normalized_spans(pairs), allow_untrained_head=allow_untrained_head,
                    progressive_schedule=progressive_schedule,
                    recalibrate_samples=recalibrate_samples,
                    guard=guard or CollapseGuard(retries=0))

    def load(self, path: str, device: str = "cpu"):
        from layergraft.models import load_classifier

        model, tokenizer = load_classifier(path)
        return model.to(device).eval(), tokenizer

    def evaluate(self, model: str, data=None, *, splits: Sequence[str] | None = None,
                 device: str = "auto", precision: str = "auto",
                 allow_untrained_head: bool = False, **ignored) -> list[dict]:
        """One record per split of `data` (default: its evaluation splits; 'ood' adds the
        task's out-of-domain sets) with the metrics, model size and versions."""
        from layergraft.data.tasks import as_source
        from layergraft.errors import LayergraftError
        from layergraft.models import load_for_task
        from layergraft.objectives.task.evaluation import evaluate_model
        from layergraft.runtime import Runtime

        if data is None:
            raise LayergraftError("give --task to evaluate a classifier (or --objective "
                                  "embedding for a sentence-transformers model)")
        runtime = Runtime.resolve(device, precision)
        loaded = as_source(data).load()
        classifier, tokenizer = load_for_task(model, loaded,
                                              allow_untrained_head=allow_untrained_head)
        classifier.to(runtime.device)
        splits = splits or list(loaded.spec.eval_splits)
        targets = [(loaded, name) for name in splits if name != "ood"]
        if "ood" in splits:
            targets += [(other, "test") for other in loaded.ood().values()]
        return [evaluate_model(classifier, tokenizer, target, name, precision=runtime.precision)
                for target, name in targets]

    def rows(self, record: Mapping, key) -> list[dict]:
        from layergraft.report.rows import record_rows

        return record_rows(record, key.budget)

    def write_rows(self, rows, out, title) -> None:
        from layergraft.objectives.task.report import write_rows

        write_rows(rows, out)

    def write_report(self, rows, out, title, record) -> None:
        from layergraft.objectives.task.report import write_comparison_report

        write_comparison_report(rows, out, title, (record or {}).get("analysis_dir"))

    def probe_score(self, record: Mapping) -> float | None:
        return record["dev"]["retention"][record["primary_metric"]]

    def depth(self, teacher: str) -> int:
        from transformers import AutoConfig

        from layergraft.models import resolve_model
        from layergraft.surgery.arch import num_layers

        return num_layers(AutoConfig.from_pretrained(resolve_model(teacher)))

    def headline(self, record: Mapping) -> str:
        metric = record["primary_metric"]
        split = "test" if "test" in record else "dev"
        result = record[split]
        return (f"{split} {metric} {100 * result['metrics'][metric]:.2f} "
                f"(teacher {100 * result['teacher'][metric]:.2f}, agreement "
                f"{100 * result['agreement']:.1f}%)")
