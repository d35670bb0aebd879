"""Evaluation metrics, implemented on scikit-learn and SciPy so scoring works offline.

Every metric is a plain function ``fn(predictions, references) -> float`` wrapped in a
:class:`Metric` that says what it consumes: ``needs="labels"`` metrics take predicted class ids,
``needs="scores"`` metrics take real-valued predictions. Degenerate inputs (a constant prediction
or reference vector) score 0.0 instead of NaN and emit no warning, because a compressed model that
collapses to one output is a legitimate, reportable outcome rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


@dataclass(frozen=True)
class Metric:
    """A named metric plus the metadata callers need to rank runs and feed it the right input."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True
    needs: Literal["labels", "scores"] = "labels"


def _is_constant(values: np.ndarray) -> bool:
    return values.size < 2 or bool(np.all(values == values.flat[0]))


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    """Fraction of exact label matches."""
    return float(accuracy_score(references, predictions))


def f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Binary F1 of class 1 (GLUE's MRPC/QQP convention); 0.0 when class 1 is never predicted."""
    score = f1_score(references, predictions, average="binary", pos_label=1, zero_division=0.0)
    return float(score)


def macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Unweighted mean of per-class F1, so minority classes count as much as majority ones."""
    return float(f1_score(references, predictions, average="macro", zero_division=0.0))


def matthews(predictions: np.ndarray, references: np.ndarray) -> float:
    """Matthews correlation (CoLA's metric); 0.0 when either side is constant (undefined)."""
    if _is_constant(predictions) or _is_constant(references):
        return 0.0
    return float(matthews_corrcoef(references, predictions))


def pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined)."""
    if _is_constant(predictions) or _is_constant(references):
        return 0.0
    return float(stats.pearsonr(predictions, references).statistic)


def spearman(predictions: np.ndarray, references: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); 0.0 when either side is constant."""
    if _is_constant(predictions) or _is_constant(references):
        return 0.0
    return float(stats.spearmanr(predictions, references).statistic)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", accuracy),
        Metric("f1", f1),
        Metric("macro_f1", macro_f1),
        Metric("matthews", matthews),
        Metric("pearson", pearson, needs="scores"),
        Metric("spearman", spearman, needs="scores"),
    )
}


def compute_metrics(
    metrics: Sequence[str], predictions: np.ndarray, references: np.ndarray, *,
    regression: bool = False,
) -> dict[str, float]:
    """Score raw model outputs with the named ``metrics`` (a task's ``spec.metrics``): logits are
    argmaxed for classification and squeezed to one score per example for ``regression``."""
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if regression:
        predictions = predictions.reshape(len(predictions), -1)
        if predictions.shape[1] != 1:
            raise ValueError(f"a regression task got {predictions.shape[1]} outputs")
        predictions = predictions[:, 0].astype(np.float64)
        references = references.astype(np.float64)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != references.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return {name: METRICS[name].fn(predictions, references) for name in metrics}
