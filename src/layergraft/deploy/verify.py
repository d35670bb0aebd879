"""Verification of an exported graph: ONNX Runtime logits against PyTorch's on the same batches.

With a task, the rows of its dev split (tokenised as training saw them, shortest first so
batches pad little); without one, `SENTENCES`, a fixed set of single sentences and pairs.
The fp32 graph must reproduce PyTorch's logits within `TOLERANCE`; the int8 graph is scored
against the fp32 one (the task's metric on both, prediction agreement).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import EXAMPLE_ID, LABELS, by_length, encode, loader, token_limit
from layergraft.data.metrics import METRICS, compute_metrics
from layergraft.data.tasks import Task
from layergraft.deploy.onnx import run_session

TOLERANCE = 1e-4  # max abs difference of fp32 ONNX logits from PyTorch's
INT8_MAX_METRIC_DROP = 0.01  # int8 may lose at most 1 point of the task's metric
INT8_MIN_AGREEMENT = 0.98  # and must predict as fp32 does on 98% of rows
BATCH_SIZE = 32
SENTENCES = [
    "A quiet, moving film that stays with you.",
    "The plot made no sense and the acting was worse.",
    "It was fine.",
    "I would not watch it again, but my children loved every minute of it.",
    "Terrible!",
    "An unexpectedly funny and warm story about two brothers who open a bakery in a small "
    "town where nobody eats bread.",
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("Is the museum open on Mondays?", "The museum is closed every Monday."),
]


def sentence_batches(tokenizer: PreTrainedTokenizerBase, names: Iterable[str]) -> list[dict]:
    """SENTENCES as two padded batches (single sentences, then pairs) of the graph's inputs."""
    singles = [s for s in SENTENCES if isinstance(s, str)]
    pairs = [s for s in SENTENCES if not isinstance(s, str)]
    cut = {"truncation": True, "max_length": token_limit(tokenizer)}
    encoded = [tokenizer(singles, padding=True, return_tensors="pt", **cut),
               tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                         return_tensors="pt", **cut)]
    return [{name: batch[name] for name in names} for batch in encoded]


def task_batches(task: Task, tokenizer: PreTrainedTokenizerBase, names: Iterable[str],
                 split: str, max_length: int = 128) -> tuple[list[dict], np.ndarray]:
    """The rows of a task split as padded batches of the graph's inputs, and their labels."""
    data = by_length(encode(task, tokenizer, max_length, splits=[split])[split])
    labels = np.asarray(data[LABELS])
    batches = []
    for batch in loader(data.remove_columns([EXAMPLE_ID, LABELS]), tokenizer, BATCH_SIZE):
        batches.append({name: batch[name] for name in names})
    return batches, labels


@torch.no_grad()
def torch_logits(model: PreTrainedModel, batches: list[dict]) -> np.ndarray:
    model.eval()
    return np.concatenate([model(**batch).logits.float().numpy() for batch in batches])


def onnx_logits(ort_session, batches: list[dict]) -> np.ndarray:
    return np.concatenate([run_session(ort_session, {k: v.numpy() for k, v in batch.items()})
                           for batch in batches])


def fp32_check(reference: np.ndarray, exported: np.ndarray, data: str) -> dict:
    diff = float(np.abs(reference - exported).max()) if len(reference) else 0.0
    return {"data": data, "rows": len(reference), "max_abs_diff": diff,
            "tolerance": TOLERANCE, "passed": diff <= TOLERANCE}


def agreement(a: np.ndarray, b: np.ndarray, regression: bool) -> float:
    """Fraction of rows with the same predicted class (regression: Pearson of the scores)."""
    if regression:
        return float(METRICS["pearson"].fn(a.reshape(-1), b.reshape(-1)))
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


def int8_check(fp32: np.ndarray, int8: np.ndarray, task: Task | None = None,
               labels: np.ndarray | None = None) -> dict:
    """int8 against fp32 ONNX: max abs logit difference and agreement; with a task, its
    primary metric on both and the pass/fail of the thresholds above."""
    regression = bool(task and task.spec.is_regression)
    record = {"max_abs_diff": float(np.abs(fp32 - int8).max()) if len(fp32) else 0.0,
              "agreement": agreement(fp32, int8, regression)}
    if task is None or labels is None:
        return {**record, "checked": False}
    metric = task.spec.primary_metric
    scores = [compute_metrics([metric], preds, labels, regression=regression)[metric]
              for preds in (fp32, int8)]
    record.update(metric=metric, fp32=scores[0], int8=scores[1],
                  max_metric_drop=INT8_MAX_METRIC_DROP, min_agreement=INT8_MIN_AGREEMENT,
                  checked=True)
    record["passed"] = (scores[0] - scores[1] <= INT8_MAX_METRIC_DROP
                        and record["agreement"] >= INT8_MIN_AGREEMENT)
    return record
