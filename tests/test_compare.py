"""The comparison grid: fair shared settings, flattened rows, and resumption after a crash."""

from __future__ import annotations

import json

import pytest
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task  # noqa: F401

import layergraft.objectives.task.run as strategies
from layergraft.errors import LayergraftError
from layergraft.pipeline.compare import (
    RunKey,
    grid_status,
    plan_runs,
    record_rows,
    run_comparison,
)
from layergraft.scoring.analysis import AnalysisSettings

FAST = dict(budget="4 steps", speed=False, progress=False,
            analysis=AnalysisSettings(samples=32, batch_size=16, progress=False))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    task = write_tiny_task(root / "task")
    return train_tiny_teacher(root / "teacher", task, steps=24), task


def test_plan_adds_every_graft_strategy_once():
    runs = plan_runs([3, 2], methods=("graft", "drop-top"), strategies=("distill",),
                     graft_strategies=("none", "distill", "progressive"))
    assert [r.name for r in runs if r.layers == 3] == [
        "L3-graft-distill-s0", "L3-drop-top-distill-s0", "L3-graft-none-s0",
        "L3-graft-progressive-s0"]
    assert len(runs) == 8
    with pytest.raises(LayergraftError, match="unknown method 'grafts'"):
        plan_runs([3], methods=("grafts",))
    with pytest.raises(LayergraftError, match="unknown strategy"):
        plan_runs([3], strategies=("distil",))


def test_interrupted_comparison_resumes_without_redoing_finished_runs(inputs, tmp_path,
                                                                      monkeypatch):
    teacher, task = inputs
    runs = [RunKey("graft", "none", 2), RunKey("drop-top", "distill", 2),
            RunKey("graft", "distill", 2)]
    executed: list[str] = []
    real_execute = strategies._Run.execute

    def counting(run, state, *loaded):
        executed.append(run.out.name)
        if run.out.name == runs[1].name and executed.count(runs[1].name) == 1:
            raise KeyboardInterrupt  # the machine dies in the middle of the second run
        return real_execute(run, state, *loaded)

    monkeypatch.setattr(strategies._Run, "execute", counting)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(teacher, task, tmp_path / "cmp", runs, **FAST)
    finished = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert {r["method"] for r in finished} == {"graft"}  # only the run that finished

    rows = run_comparison(teacher, task, tmp_path / "cmp", runs, **FAST)
    assert executed == [runs[0].name, runs[1].name, runs[1].name, runs[2].name]
    assert {(r["method"], r["strategy"]) for r in rows} == {
        ("graft", "none"), ("drop-top", "distill"), ("graft", "distill")}
    for row in rows:
        assert row["layers"] == 2 and row["split"] in ("dev", "test")
        assert row["retention"] == pytest.approx(row["value"] / row["teacher_value"])
        assert row["budget"] == (0.0 if row["strategy"] == "none" else 1.0)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "drop-top" in report and "head importance" in report
    assert (tmp_path / "cmp" / "results.csv").read_text().count("\n") == len(rows) + 1


def test_record_rows_flattens_every_split_and_metric():
    record = {"task": "t", "method": "graft", "strategy": "distill", "layers": 2, "seed": 1,
              "student": {"parameters": 10}, "teacher": {"parameters": 20},
              "train": {"seconds": 3.0}, "speed": {"throughput_ratio": {"32": 1.9, "1": 1.5}},
              "dev": {"examples": 5, "metrics": {"pearson": 0.8, "spearman": 0.6},
                      "teacher": {"pearson": 0.9, "spearman": 0.75},
                      "retention": {"pearson": 0.8 / 0.9, "spearman": 0.8},
                      "agreement": 0.95}}
    rows = record_rows(record)
    assert [(r["metric"], r["value"], r["teacher_value"]) for r in rows] == [
        ("pearson", 0.8, 0.9), ("spearman", 0.6, 0.75)]
    assert rows[0]["throughput_ratio"] == 1.9 and rows[0]["throughput_ratio_b1"] == 1.5


def test_budget_fractions_scale_the_full_budget_and_name_the_run():
    from layergraft.training.budget import Budget

    key = RunKey("graft", "distill", 2, seed=1, budget=0.25)
    assert key.name == "L2-graft-distill-s1-b0.25"
    assert key.scaled(Budget(3, "epochs")) == Budget(0.75, "epochs")
    assert key.scaled(Budget(10, "steps")) == Budget(3, "steps")
    assert RunKey("graft", "none", 2, budget=0.25).name == "L2-graft-none-s0"


def test_the_progressive_schedule_goes_to_the_progressive_runs_only(tmp_path):
    calls = {}

    def compress(teacher, task, **cell):
        calls[cell["strategy"]] = cell
        return {"status": "to do"}

    runs = plan_runs([2], methods=("graft",), graft_strategies=("distill", "progressive"))
    grid_status("teacher", None, tmp_path, runs, compress, progressive_schedule="one")
    assert calls["progressive"]["progressive_schedule"] == "one"
    assert "progressive_schedule" not in calls["distill"]
    with pytest.raises(LayergraftError, match="this grid has none"):
        grid_status("teacher", None, tmp_path, runs[:1], compress, progressive_schedule="one")
    with pytest.raises(LayergraftError, match="unknown progressive schedule"):
        grid_status("teacher", None, tmp_path, runs, compress, progressive_schedule="once")
