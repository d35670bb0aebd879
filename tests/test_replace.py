"""Module replacement (`--strategy replace`): Theseus's schedule, inside the teacher, then alone."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_batches, make_tiny_model
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task
from transformers import AutoModelForSequenceClassification

from layergraft.errors import LayergraftError
from layergraft.pipeline.compress import compress
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.arch import encoder_layers
from layergraft.surgery.graft import graft_model
from layergraft.training.replace import Replaceable, ReplaceSchedule, unwrap, wrap
from layergraft.training.train import TrainConfig

assert one_thread  # an autouse fixture


def test_the_schedule_rises_linearly_to_one_then_stays():
    schedule = ReplaceSchedule(start=0.5, ramp=0.5)
    assert schedule.probability(0, 100) == 0.5
    assert schedule.probability(25, 100) == pytest.approx(0.75)
    assert schedule.probability(50, 100) == 1.0 == schedule.probability(99, 100)
    with pytest.raises(LayergraftError, match="replacement schedule"):
        ReplaceSchedule(start=1.5)


@pytest.mark.parametrize("family", ["bert", "mpnet", "distilbert", "deberta-v2"])
def test_a_wrapped_student_is_the_teacher_at_p_0_and_the_student_at_p_1(family):
    teacher = make_tiny_model(family, num_layers=4).eval()
    student, _ = graft_model(teacher, layers=2, method="drop-alternate")
    batch = make_tiny_batches(teacher, n_batches=1)[0]
    with torch.no_grad():
        want_student = student(**batch).logits
        want_teacher = teacher(**batch).logits
        wrappers = wrap(student, teacher, [(0, 1), (2, 3)])
        for wrapper in wrappers:  # the wrappers sample as in training; dropout stays off
            wrapper.training, wrapper.p = True, 0.0
        torch.testing.assert_close(student(**batch).logits, want_teacher)
        for wrapper in wrappers:
            wrapper.p = 1.0
        torch.testing.assert_close(student(**batch).logits, want_student)
        for wrapper in wrappers:
            wrapper.training, wrapper.p = False, 0.0  # evaluation runs the compact student
        torch.testing.assert_close(student(**batch).logits, want_student)
    assert not any(p.requires_grad for w in wrappers for p in w.teacher.parameters())
    unwrap(student)
    assert not any(isinstance(layer, Replaceable) for layer in encoder_layers(student))


def test_replace_ends_with_a_stock_compact_student(tmp_path):
    task = write_tiny_task(tmp_path / "task")
    teacher = train_tiny_teacher(tmp_path, task)
    record = compress(teacher, task, layers=2, strategy="replace", budget="2 epochs",
                      out_dir=tmp_path / "replace", speed=False, progress=False,
                      precision="fp32", cache_dir=tmp_path / "cache",
                      training=TrainConfig(output_dir="", batch_size=16, learning_rate=1e-3,
                                           progress=False, max_length=24),
                      analysis=AnalysisSettings(samples=32, batch_size=16, max_length=24,
                                                progress=False))
    assert record["settings"]["replace"] == {"start": 0.5, "ramp": 0.5}
    assert record["train"]["steps"] == 8 and record["student"]["layers"] == 2
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "replace")
    assert saved.config.num_hidden_layers == 2 == len(encoder_layers(saved))
    assert record["student"]["parameters"] == sum(p.numel() for p in saved.parameters())
