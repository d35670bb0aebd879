"""One speed per shape in compare's report (issue 35): two methods at one depth are one
shape, timed once in one interleaved run with the teacher, and both rows carry that figure;
the report names it the shape speed-up."""

from __future__ import annotations

import json

import pytest
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task

from layergraft.pipeline import speedup
from layergraft.pipeline.compare import RunKey, run_comparison
from layergraft.pipeline.shape_speed import student_shape
from layergraft.report.render import SHAPE_SPEED
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.training.train import TrainConfig

TRAINING = TrainConfig(output_dir="", batch_size=16, learning_rate=1e-3, progress=False,
                       max_length=24, eval_batch_size=32)
assert one_thread  # an autouse fixture


class Recording:
    """The real timer, noting which models each call timed."""

    def __init__(self, timer):
        self.timer, self.models = timer, []

    def __call__(self, models, *args, **kwargs):
        self.models.append(list(models))
        return self.timer(models, *args, **kwargs)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A real grid: graft and drop-alternate at 2 layers (plus graft at 3), every call of
    the shape timer recorded (the real timer runs)."""
    root = tmp_path_factory.mktemp("shape-speed")
    task = write_tiny_task(root / "task")
    teacher = train_tiny_teacher(root, task, num_layers=4)
    runs = [RunKey("graft", "none", 2), RunKey("drop-alternate", "none", 2),
            RunKey("graft", "none", 3)]
    timer = Recording(speedup.measure_speed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(speedup, "measure_speed", timer)
        rows = run_comparison(teacher, task, root / "cmp", runs, budget="1 epoch",
                              training=TRAINING, ood=False, progress=False,
                              cache_dir=root / "cache",
                              analysis=AnalysisSettings(samples=32, batch_size=16,
                                                        max_length=24, progress=False))
    return rows, timer.models, root / "cmp"


def test_rows_of_one_shape_carry_one_speed_timed_once(compared):
    rows, calls, out = compared
    two = {r["method"]: r["throughput_ratio"] for r in rows if r["layers"] == 2}
    assert set(two) == {"graft", "drop-alternate"}
    assert len(set(two.values())) == 1 and next(iter(two.values())) > 0
    assert all(r["run_throughput_ratio"] is not None for r in rows)  # the run's own, kept
    bench = json.loads((out / "shape_speed.json").read_text())
    assert calls == [["teacher", *(row["shape"] for row in bench["shapes"])]]  # one run
    assert [row["layers"] for row in bench["shapes"]] == [2, 3]  # each shape once
    assert bench["threads"] == 1 and bench["cpu"]
    assert bench["runs"]["L2-graft-none-s0"] == bench["runs"]["L2-drop-alternate-none-s0"]


def test_report_labels_the_shape_speed(compared):
    _, _, out = compared
    report = (out / "report.md").read_text()
    assert SHAPE_SPEED in report and "each shape timed once" in report
    assert student_shape(out / "runs" / "L3-graft-none-s0").layers == 3
