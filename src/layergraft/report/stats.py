"""Statistics over result rows: summaries over seeds, the final budget, Pareto fronts, and
paired tests of two models on the same examples.

Rows are long format, one per run x split x metric, with at least the keys of `ROW_KEYS`.
The paired tests (`mcnemar`, `paired_bootstrap`) are pure functions over saved per-example
predictions; their outputs are records too, which `layergraft.report.render` renders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from layergraft.data.metrics import METRICS

ROW_KEYS = ("task", "method", "strategy", "layers", "budget", "seed", "split", "metric",
            "value", "teacher_value", "retention", "agreement", "throughput_ratio", "params",
            "train_seconds")
GROUP_KEYS = ("task", "split", "metric", "method", "strategy", "layers", "budget")
STAT_FIELDS = ("value", "teacher_value", "retention", "agreement", "throughput_ratio",
               "params", "size_bytes", "train_seconds")
SORT_PRIORITY = ("task", "split", "metric", "layers", "method", "strategy", "budget")
# One trained configuration; its rows at different budgets form a budget curve.
RUN_KEYS = ("task", "split", "metric", "method", "strategy", "layers")


def summary_table(
    rows: Sequence[Mapping],
    *,
    split: str | None = None,
    metric: str | None = None,
    group_by: Sequence[str] = GROUP_KEYS,
    fields: Sequence[str] = STAT_FIELDS,
) -> list[dict]:
    """Rows aggregated over seeds: `n`, `seeds`, and `<field>_mean` / `<field>_std` per field.

    The std is the sample std (ddof=1), None for a single seed; missing values are left
    out of their field only. Groups come ordered by first appearance, deepest first.
    """
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        if (split is None or row.get("split") == split) and (
                metric is None or row.get("metric") == metric):
            groups.setdefault(tuple(row.get(k) for k in group_by), []).append(row)
    summary = []
    for key, members in groups.items():
        entry = dict(zip(group_by, key, strict=True))
        entry["n"] = len(members)
        entry["seeds"] = sorted({m["seed"] for m in members if m.get("seed") is not None})
        for field in fields:
            values = [float(m[field]) for m in members if present(m.get(field))]
            entry[f"{field}_mean"] = float(np.mean(values)) if values else None
            entry[f"{field}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        summary.append(entry)
    return sorted(summary, key=_order_key(summary, group_by))


def final_budget(summary: Sequence[Mapping]) -> list[Mapping]:
    """Each configuration at the largest training budget it has (surgery-only rows stay)."""
    best: dict[tuple, Mapping] = {}
    for entry in summary:
        key = tuple(entry.get(k) for k in RUN_KEYS)
        if key not in best or budget_of(entry) > budget_of(best[key]):
            best[key] = entry
    return [e for e in summary if best[tuple(e.get(k) for k in RUN_KEYS)] is e]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better), by x."""
    valid = [i for i, p in enumerate(points) if all(present(v) for v in p)]
    front = [i for i in valid if not any(
        points[j][0] >= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i]
        for j in valid)]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def mcnemar(pred_a: Sequence, pred_b: Sequence, labels: Sequence) -> dict:
    """Exact McNemar test of two classifiers on the same examples (binomial on discordant pairs).

    `only_a` counts examples A gets right and B wrong; the two-sided p-value is that of
    `only_a` successes in `only_a + only_b` fair coin flips (1.0 when they never differ).
    """
    right_a, right_b = _correct(pred_a, labels), _correct(pred_b, labels)
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    discordant = only_a + only_b
    p_value = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return {"n": int(right_a.size), "a_correct": int(right_a.sum()),
            "b_correct": int(right_b.sum()), "only_a": only_a, "only_b": only_b,
            "p_value": float(p_value)}


def paired_bootstrap(
    pred_a: Sequence,
    pred_b: Sequence,
    labels: Sequence,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Metric(A) - metric(B) with a percentile bootstrap CI over resampled examples.

    Predictions are what the metric consumes (class ids, or scores for regression).
    `p_value` is the two-sided share of resamples on the other side of zero, add-one
    smoothed so it is never reported as exactly 0.
    """
    fn = METRICS[metric].fn if isinstance(metric, str) else metric
    a, b, y = (np.asarray(v) for v in (pred_a, pred_b, labels))
    if not a.shape == b.shape == y.shape:
        raise ValueError(f"predictions and labels differ in shape: {a.shape}, {b.shape}, {y.shape}")

    def delta(a_, b_, y_):
        return fn(a_, y_) - fn(b_, y_)

    result = stats.bootstrap((a, b, y), delta, paired=True, vectorized=False,
                             n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    draws = result.bootstrap_distribution
    tail = min(np.sum(draws <= 0), np.sum(draws >= 0))
    return {"n": int(y.size), "metric": getattr(fn, "__name__", str(metric)),
            "a": float(fn(a, y)), "b": float(fn(b, y)), "delta": float(delta(a, b, y)),
            "ci_low": float(result.confidence_interval.low),
            "ci_high": float(result.confidence_interval.high),
            "p_value": float(min(1.0, 2 * (tail + 1) / (n_resamples + 1)))}


def group_lines(summary: Sequence[Mapping], keys: Sequence[str]) -> dict[str, list[Mapping]]:
    """Entries grouped into plot lines, labelled by the keys' values."""
    lines: dict[str, list[Mapping]] = {}
    for entry in summary:
        lines.setdefault(" / ".join(str(entry.get(k)) for k in keys), []).append(entry)
    return lines


def present(value) -> bool:
    """Whether a field holds a value (not None, not NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def budget_of(entry: Mapping) -> float:
    """An entry's training budget (-inf when it has none), for ordering."""
    budget = entry.get("budget")
    return float(budget) if present(budget) else -math.inf


def _correct(predictions: Sequence, labels: Sequence) -> np.ndarray:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape} predictions for {labels.shape} labels")
    return predictions == labels


def _order_key(summary: Sequence[Mapping], keys: Sequence[str]):
    """Depth before method (deepest first), budgets ascending, text in order of appearance."""
    first = {k: {v: i for i, v in reversed(list(enumerate(e.get(k) for e in summary)))}
             for k in keys}
    priority = [k for k in SORT_PRIORITY if k in keys] + [k for k in keys if k not in SORT_PRIORITY]

    def key(entry: Mapping) -> tuple:
        parts = []
        for k in priority:
            value = entry.get(k)
            if k == "layers" and present(value):
                parts.append(-float(value))
            elif k == "budget":
                parts.append(budget_of(entry))
            else:
                parts.append(first[k][value])
        return tuple(parts)

    return key
