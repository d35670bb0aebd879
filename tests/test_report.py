"""Records -> tables, tests, plots and reports: numbers checked by hand, files checked on disk."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from layergraft.report.render import write_report
from layergraft.report.stats import (
    final_budget,
    mcnemar,
    paired_bootstrap,
    pareto_front,
    summary_table,
)
from layergraft.report.tables import markdown_table, write_csv


def _row(method, layers, seed, value, *, strategy="distill", budget=1.0, split="test",
         metric="accuracy", agreement=0.9, ratio=None, task="movie-sentiment"):
    return {"task": task, "method": method, "strategy": strategy, "layers": layers,
            "budget": budget, "seed": seed, "split": split, "metric": metric, "value": value,
            "teacher_value": 0.84, "retention": value / 0.84, "agreement": agreement,
            "throughput_ratio": ratio if ratio is not None else 6 / layers,
            "params": 1_000_000 * layers, "train_seconds": 100.0 * budget}


ROWS = [
    _row("graft", 3, 0, 0.80, agreement=0.95),
    _row("graft", 3, 1, 0.82, agreement=None),
    _row("graft", 3, 2, 0.84, agreement=0.97),
    _row("graft", 3, 0, 0.70, split="dev"),
    _row("graft", 3, 0, 0.75, metric="macro_f1"),
    _row("drop-top", 3, 0, 0.78),
    _row("graft", 2, 0, 0.76),
    _row("graft", 2, 1, 0.78),
]


def test_summary_aggregates_over_seeds_by_hand():
    summary = summary_table(ROWS, split="test", metric="accuracy")
    assert [(e["method"], e["layers"]) for e in summary] == [
        ("graft", 3), ("drop-top", 3), ("graft", 2)]  # deepest first, then first appearance
    backwards = summary_table(ROWS[::-1], split="test", metric="accuracy")
    assert [(e["method"], e["layers"]) for e in backwards] == [
        ("graft", 3), ("drop-top", 3), ("graft", 2)]  # graft still seen first, 2L still last
    graft3, drop3, graft2 = summary
    assert graft3["n"] == 3 and graft3["seeds"] == [0, 1, 2]
    assert graft3["value_mean"] == pytest.approx(0.82)
    assert graft3["value_std"] == pytest.approx(0.02)  # sample std of .80 .82 .84
    assert graft3["retention_mean"] == pytest.approx(0.82 / 0.84)
    assert graft3["agreement_mean"] == pytest.approx(0.96)  # the missing value is left out
    assert graft3["agreement_std"] == pytest.approx(np.std([0.95, 0.97], ddof=1))
    assert drop3["n"] == 1 and drop3["value_mean"] == 0.78 and drop3["value_std"] is None
    assert graft2["value_mean"] == pytest.approx(0.77)
    assert graft2["value_std"] == pytest.approx(np.sqrt(2 * 0.01 ** 2))
    everything = summary_table(ROWS)
    assert len(everything) == 5 and sum(e["n"] for e in everything) == len(ROWS)


def test_final_budget_keeps_each_configuration_at_its_largest_budget():
    rows = [_row("graft", 2, 0, v, budget=b) for v, b in ((0.70, 0.25), (0.75, 1.0), (0.6, 0.5))]
    rows.append(_row("graft", 2, 0, 0.40, strategy="none", budget=0.0))
    final = final_budget(summary_table(rows))
    assert sorted((e["strategy"], e["budget"], e["value_mean"]) for e in final) == [
        ("distill", 1.0, 0.75), ("none", 0.0, 0.40)]


def test_markdown_table_content():
    summary = summary_table(ROWS, split="test", metric="accuracy")
    table = markdown_table(summary, ["method", "layers", "budget", "n", "value", "agreement",
                                     "throughput_ratio", "params"], {"value": "accuracy"})
    assert table.splitlines() == [
        "| method | layers | budget | seeds | accuracy | agreement % | speed-up | params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| graft | 3 | 1 | 3 | 82.0 ± 2.0 | 96.0 ± 1.4 | 2.00× ± 0.00× | 3.00M |",
        "| drop-top | 3 | 1 | 1 | 78.0 | 90.0 | 2.00× | 3.00M |",
        "| graft | 2 | 1 | 2 | 77.0 ± 1.4 | 90.0 ± 0.0 | 3.00× ± 0.00× | 2.00M |",
    ]
    assert "| 1/8 |" in markdown_table([{"budget": 0.125}], ["budget"])
    assert "| — |" in markdown_table([{"value": None}], ["value"])
    assert "| 1.5 MiB |" in markdown_table([{"size_bytes": 1.5 * 2 ** 20}], ["size_bytes"])


def test_write_csv_round_trips(tmp_path):
    rows = [_row("graft", 3, 0, 0.8), {**_row("random", 1, 0, 0.5), "extra": [1, 2],
                                       "agreement": None}]
    path = write_csv(rows, tmp_path / "out" / "results.csv")
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0])[:4] == ["task", "method", "strategy", "layers"]
    assert list(read[0])[-1] == "extra"
    assert read[0]["value"] == "0.8" and read[0]["extra"] == ""
    assert read[1]["extra"] == "[1, 2]" and read[1]["agreement"] == ""
    assert [p.name for p in path.parent.iterdir()] == ["results.csv"]  # no temp file left


def test_mcnemar_matches_the_exact_binomial_by_hand():
    labels = np.ones(20, dtype=int)
    a = np.array([1] * 8 + [0] * 2 + [1] * 6 + [0] * 4)  # right on 8 where b is wrong
    b = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)  # right on 2 where a is wrong
    result = mcnemar(a, b, labels)
    # two-sided: 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert result["p_value"] == pytest.approx(112 / 1024)
    assert (result["only_a"], result["only_b"], result["n"]) == (8, 2, 20)
    assert (result["a_correct"], result["b_correct"]) == (14, 8)
    assert mcnemar(b, a, labels)["p_value"] == pytest.approx(112 / 1024)
    assert mcnemar(a, a, labels)["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar(a, b[:5], labels)


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, labels, 1 - labels)
    poor = np.where(rng.random(300) < 0.6, labels, 1 - labels)
    result = paired_bootstrap(good, poor, labels, "accuracy", n_resamples=200, seed=1)
    assert result["delta"] == pytest.approx(np.mean(good == labels) - np.mean(poor == labels))
    assert 0 < result["ci_low"] < result["delta"] < result["ci_high"]
    assert result["p_value"] == pytest.approx(2 / 201)  # no resample crosses zero
    assert result == paired_bootstrap(good, poor, labels, "accuracy", n_resamples=200, seed=1)
    same = paired_bootstrap(good, good, labels, n_resamples=200)
    assert same["delta"] == same["ci_low"] == same["ci_high"] == 0.0
    assert same["p_value"] == 1.0
    scores = rng.normal(size=50)
    custom = paired_bootstrap(scores, -scores, scores, lambda p, r: float(np.mean(p * r)),
                              n_resamples=100)
    assert custom["delta"] == pytest.approx(2 * np.mean(scores ** 2))


def test_pareto_front_on_a_hand_made_set():
    points = [(1.0, 0.84), (2.0, 0.80), (2.0, 0.81), (3.0, 0.79), (3.0, 0.70), (6.0, 0.70),
              (5.0, 0.69), (2.0, 0.81), (4.0, None)]
    # (2, .80) loses to (2, .81); (3, .70) to (3, .79); (5, .69) to (6, .70); ties both stay
    assert pareto_front(points) == [0, 2, 7, 3, 5]
    assert pareto_front([]) == []


def test_write_report_writes_self_contained_html_and_markdown(tmp_path):
    rows = []
    for method, bonus in (("graft", 0.02), ("drop-top", 0.0)):
        for layers in (3, 2, 1):
            for budget in (0.25, 1.0):
                for seed in (0, 1):
                    value = 0.70 + 0.03 * layers + bonus + 0.05 * budget + 0.004 * seed
                    for split in ("test", "tweets"):
                        rows.append(_row(method, layers, seed, value, budget=budget, split=split))
        rows.append(_row(method, 2, 0, 0.5, strategy="none", budget=0.0))
    extra = tmp_path / "cka.png"
    extra.write_bytes(b"\x89PNG\r\n\x1a\nnot really a picture")
    out = tmp_path / "report"
    md, html = write_report(rows, out, "Offline <benchmark>", {"teacher CKA": extra},
                            comparisons=[{"a": "graft 2L", "b": "drop-top 2L", "p_value": 0.0123}])
    text, page = md.read_text(), html.read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pictures == ["movie-sentiment-depth.png", "movie-sentiment-budget.png",
                        "movie-sentiment-pareto.png", "cka.png"]
    for name in pictures:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert "| graft | distill | 2 | 1 | 2 | 83.2 ± 0.3 | 99.0 ± 0.3 |" in text  # full-budget rows
    assert "| graft | none | 2 | 0 | 1 | 50.0 |" in text
    assert "on disk" not in text  # no row has a size: the column is left out
    assert "agreement with the teacher (%) by split" in text and "| tweets |" in text
    assert "| graft 2L | drop-top 2L | 0.0123 |" in text
    # self-contained: every image inline, no link or source outside the page
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page) + re.findall(r"url\(", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<title>Offline &lt;benchmark&gt;</title>" in page
    write_report(rows, out, "again")  # rerunning replaces the files
    assert "# again" in md.read_text()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
