"""Score any sequence-classification model on any task split, and record the result.

:func:`predict` runs the model over an encoded split and returns its raw outputs in row order;
:func:`evaluate_model` turns them into a JSON-ready record (task, split, metrics, model size,
library versions); :func:`format_table` prints records for people. :func:`agreement` measures
how often a student matches its teacher (fidelity), which varies less than accuracy does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import EXAMPLE_ID, LABELS, by_length, encode, loader
from layergraft.data.metrics import METRICS, compute_metrics
from layergraft.data.tasks import Task, TaskSpec, check_model_fits
from layergraft.errors import LayergraftError
from layergraft.runtime import Runtime
from layergraft.surgery.arch import num_layers
from layergraft.utils import num_parameters, versions, write_json_atomic


@torch.no_grad()
def predict(
    model: PreTrainedModel,
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 128,
    progress: bool = True,
    precision: str = "fp32",
) -> np.ndarray:
    """Raw outputs (logits, or one score per row for regression) of an encoded split, as float32
    of shape ``(rows, num_labels)`` in ``example_id`` order.

    Rows are batched by length so little padding is computed. ``precision`` (resolved, see
    `layergraft.runtime`) "bf16" runs under bfloat16 autocast: about 3x faster on a CPU with
    native bf16, within ~1e-2 of float32 logits, but several times slower where it is emulated.
    """
    model.eval()
    device = model.device
    runtime = Runtime(device, precision)
    ordered = by_length(dataset)
    out = np.zeros((len(dataset), model.config.num_labels), dtype=np.float32)
    batches = loader(ordered, tokenizer, batch_size)
    for batch in tqdm(batches, desc="predicting", disable=not progress, leave=False):
        ids = batch.pop(EXAMPLE_ID).numpy()
        batch.pop(LABELS, None)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        with runtime.autocast():
            logits = model(**batch).logits
        out[ids] = logits.float().cpu().numpy()
    return out


def agreement(student_preds: np.ndarray, teacher_preds: np.ndarray, spec: TaskSpec) -> float:
    """Fidelity of a student to its teacher on the same rows: the fraction of equal predicted
    classes, or for regression the Pearson correlation of the two models' scores."""
    student, teacher = np.asarray(student_preds), np.asarray(teacher_preds)
    if student.shape != teacher.shape:
        raise ValueError(f"predictions differ in shape: {student.shape} vs {teacher.shape}")
    if spec.is_regression:
        return METRICS["pearson"].fn(student.reshape(-1), teacher.reshape(-1))
    return float(np.mean(student.argmax(-1) == teacher.argmax(-1)))


def model_summary(model: PreTrainedModel) -> dict:
    return {"name_or_path": str(getattr(model.config, "_name_or_path", "") or ""),
            "model_type": model.config.model_type, "layers": num_layers(model.config),
            "parameters": num_parameters(model)}


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    split: str = "dev",
    *,
    batch_size: int = 128,
    max_length: int = 128,
    precision: str = "fp32",
    progress: bool = True,
    keep_predictions: bool = False,
) -> dict:
    """Score ``model`` on one labeled split of ``task``: a JSON-ready record with the task's
    metrics, the number of examples, the model's depth and size, where and in which precision
    it ran, and library versions (plus the raw outputs, in row order, when
    ``keep_predictions``). The model runs where it is; ``precision`` is a resolved one."""
    check_model_fits(task.spec, model.config)
    if split not in task.splits:
        raise LayergraftError(f"task {task.spec.name} has no '{split}' split; "
                              f"choose one of {', '.join(task.splits)}")
    if not task.labeled(split):
        raise LayergraftError(f"the {split} split of {task.spec.name} has no labels (GLUE "
                              "keeps test labels private); evaluate on dev")
    encoded = encode(task, tokenizer, max_length, splits=[split])[split]
    start = time.perf_counter()
    preds = predict(model, encoded, tokenizer, batch_size, progress=progress,
                    precision=precision)
    seconds = time.perf_counter() - start
    metrics = compute_metrics(task.spec.metrics, preds, np.asarray(encoded[LABELS]),
                              regression=task.spec.is_regression)
    record = {"task": task.spec.name, "split": split, "metrics": metrics,
              "primary_metric": task.spec.primary_metric, "examples": len(encoded),
              "model": model_summary(model), "seconds": round(seconds, 3),
              "settings": {"batch_size": batch_size, "max_length": max_length,
                           **Runtime(model.device, precision).record()},
              "versions": versions()}
    if keep_predictions:
        record["predictions"] = preds.tolist()
    return record


def save_results(record: Mapping | list, path: str | os.PathLike) -> None:
    """Write one record (or a list of them) as JSON, atomically."""
    write_json_atomic(path, record)


def format_table(records: Iterable[Mapping]) -> str:
    """Records as an aligned plain-text table: one row per task / split, one column per metric
    (percentages, as papers print them)."""
    records = list(records)
    metric_names = list(dict.fromkeys(m for r in records for m in r["metrics"]))
    header = ["task", "split", "examples", *metric_names]
    rows = [[str(r["task"]), str(r["split"]), str(r["examples"]),
             *(f"{100 * r['metrics'][m]:.2f}" if m in r["metrics"] else "-"
               for m in metric_names)] for r in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
