"""Quality per backend: every (model, backend) scored on one labelled task split.

A faster backend is only worth having if it predicts as well, so `bench` scores each pair
with the runner it timed (PyTorch logits, or ONNX Runtime's through the same graphs), on the
same batches (the split tokenised as training saw it, shortest first), with the task's
metrics. Retention is against the first model on the first backend (the teacher in
torch-fp32), the reference of the speed ratios too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from layergraft.data.metrics import compute_metrics
from layergraft.data.tasks import Task
from layergraft.deploy import verify
from layergraft.deploy.backends import ExportedModel, Runner
from layergraft.deploy.onnx import input_names
from layergraft.errors import LayergraftError


def default_split(task: Task) -> str:
    """test where it has labels, else the task's first evaluation split."""
    return "test" if "test" in task.splits and task.labeled("test") else task.spec.eval_splits[0]


def score(runners: Mapping[tuple[str, str], Runner | str], models: Mapping, tokenizers: Mapping,
          task: Task, split: str, max_length: int = 128) -> dict[tuple[str, str], dict]:
    """The task's metrics of every pair that runs, on `split`."""
    if split not in task.splits or not task.labeled(split):
        raise LayergraftError(f"task {task.spec.name} has no labelled '{split}' split to score "
                              f"on: choose --score-split from {', '.join(task.splits)}")
    scores, inputs = {}, {}
    for (name, backend), runner in runners.items():
        if not isinstance(runner, Runner):
            continue
        if name not in inputs:
            model = models[name]
            names = (model.inputs if isinstance(model, ExportedModel)
                     else input_names(model, tokenizers[name]))
            inputs[name] = verify.task_batches(task, tokenizers[name], names, split, max_length)
        batches, labels = inputs[name]
        logits = runner.logits(runner.prepare(batches))
        scores[name, backend] = compute_metrics(task.spec.metrics, logits, labels,
                                                regression=task.spec.is_regression)
    metric = task.spec.primary_metric
    return {pair: {"score_split": split, "metric": metric, "value": metrics[metric],
                   "metrics": metrics} for pair, metrics in scores.items()}


def add_quality(rows: Sequence[dict], scores: Mapping[tuple[str, str], Mapping]) -> None:
    """Put each pair's scores and retention (vs the first scored pair) on its records."""
    if not scores:
        return
    reference = next(iter(scores.values()))["value"]
    for row in rows:
        entry = scores.get((row["model"], row.get("backend")))
        if entry is not None:
            row.update(entry, retention=entry["value"] / reference if reference else None)
