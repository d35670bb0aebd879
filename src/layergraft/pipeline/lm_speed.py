"""A causal LM's prefill and decode tokens per second, teacher beside student, timed by this
layer's `measure_speed` (the runners and the record: `layergraft.deploy.lm_speed`, below the
objectives, so that the `lm` objective times with the timer the loop hands it)."""

from __future__ import annotations

from transformers import PreTrainedModel

from layergraft.deploy.lm_speed import PHASES, DecodeRunner, PrefillRunner  # noqa: F401
from layergraft.deploy.lm_speed import lm_speed as _lm_speed
from layergraft.pipeline.bench import measure_speed


def lm_speed(teacher: PreTrainedModel, student: PreTrainedModel, **settings) -> dict:
    """`layergraft.deploy.lm_speed.lm_speed` timed by `layergraft.pipeline.bench`."""
    return _lm_speed(teacher, student, measure_speed=measure_speed, **settings)
