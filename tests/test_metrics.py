"""Metrics against values computed by hand, including the degenerate cases GLUE runs hit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from layergraft.data.metrics import METRICS, compute_metrics
from layergraft.data.tasks import get_spec


def score(name: str, predictions, references) -> float:
    return METRICS[name].fn(np.asarray(predictions), np.asarray(references))


def test_accuracy_and_binary_f1_by_hand():
    assert score("accuracy", [0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    # TP=2 (rows 0, 4), FP=1 (row 1), FN=1 (row 3): precision = recall = 2/3.
    assert score("f1", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert score("f1", [0, 0, 0], [1, 0, 1]) == 0.0  # class 1 never predicted


def test_macro_f1_weights_classes_equally():
    # class 0: P=1, R=1/2 -> 2/3; class 1: P=1/2, R=1 -> 2/3; class 2: P=R=1 -> 1.
    predictions, references = [0, 1, 1, 2], [0, 0, 1, 2]
    assert score("macro_f1", predictions, references) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_matthews_by_hand_and_edge_cases():
    # TP=1, TN=2, FP=1, FN=0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2)
    assert score("matthews", [1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12))
    assert score("matthews", [1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert score("matthews", [0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined cases must not warn either
        assert score("matthews", [1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # constant predictions
        assert score("matthews", [1, 0, 1, 0], [0, 0, 0, 0]) == 0.0  # constant references


def test_pearson_by_hand():
    # x - mean = (-1, 0, 1); y - mean = (-4/3, -1/3, 5/3): cov 3, |x| = sqrt 2, |y| = sqrt(42)/3
    assert score("pearson", [1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84))
    assert score("pearson", [2.0, 2.0, 2.0], [1, 2, 4]) == 0.0


def test_spearman_ties_get_average_ranks_and_constants_score_zero():
    # ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): centred dot 4.5, norms sqrt(4.5) and sqrt(5)
    assert score("spearman", [1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert score("spearman", [1, 10, 100, 1000], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert score("spearman", [3, 3, 3, 3], [1, 2, 3, 4]) == 0.0
        assert score("spearman", [1], [1]) == 0.0


def test_metric_metadata():
    assert all(m.higher_is_better for m in METRICS.values())
    assert {n for n, m in METRICS.items() if m.needs == "scores"} == {"pearson", "spearman"}


def test_compute_metrics_argmaxes_logits_and_squeezes_regression_scores():
    mrpc = get_spec("mrpc")
    logits = np.array([[0.2, 0.9], [2.0, -1.0], [0.1, 0.3], [0.5, 0.4]])
    result = compute_metrics(mrpc.metrics, logits, np.array([1, 0, 0, 1]))
    # predicted (1, 0, 1, 0): TP=1, FP=1, FN=1 -> F1 1/2; accuracy 2/4
    assert result == {"f1": pytest.approx(0.5), "accuracy": pytest.approx(0.5)}
    assert mrpc.primary_metric == "f1"
    stsb = get_spec("stsb")
    result = compute_metrics(stsb.metrics, np.array([[1.0], [2.0], [3.0]]),
                             np.array([1.0, 2.0, 4.0]), regression=stsb.is_regression)
    assert result["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert result["spearman"] == pytest.approx(1.0)


def test_compute_metrics_rejects_mismatched_outputs():
    with pytest.raises(ValueError, match="2 outputs"):
        compute_metrics(get_spec("stsb").metrics, np.zeros((3, 2)), np.zeros(3), regression=True)
    with pytest.raises(ValueError, match="3 predictions for 2 references"):
        compute_metrics(get_spec("sst2").metrics, np.zeros((3, 2)), np.zeros(2))
