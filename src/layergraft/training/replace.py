"""Module replacement (BERT-of-Theseus, Xu et al. 2020, arXiv 2002.02925) for a grafted student.

Each student layer k stands for a span of teacher layers. During training every span is, per
batch and independently, either the frozen teacher layers of the span or the student layer,
the student's with probability p; p rises linearly from `start` to 1 over the first
`ramp` share of the steps (Theseus's linear schedule), after which only the compact student
runs and trains. So each graft first learns inside the teacher, fed the teacher's own
states, before it must stand alone, within the same optimizer steps as any other strategy.

The student model itself is the training vehicle: its layer list is swapped, for the length
of the training, for `Replaceable` wrappers holding the student layer and a frozen copy of
the teacher layers of its span, and swapped back afterwards (`unwrap`), so the result is the
stock student with nothing left of the teacher. Evaluation (dev checkpoints) always runs the
compact student.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, TrainerCallback

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import encoder_layers, spec_for


@dataclass(frozen=True)
class ReplaceSchedule:
    """p(step) = min(1, start + (1 - start) * step / (ramp * total))."""

    start: float = 0.5
    ramp: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.start <= 1 or not 0 < self.ramp <= 1:
            raise LayergraftError(f"a replacement schedule needs 0 <= start <= 1 and "
                                  f"0 < ramp <= 1 (got {self.start}, {self.ramp})")

    def probability(self, step: int, total: int) -> float:
        return min(1.0, self.start + (1 - self.start) * step / max(1.0, self.ramp * total))

    def to_dict(self) -> dict:
        return asdict(self)


# Theseus's linear schedule: p from 0.5 to 1 over the first half, then the student alone
REPLACE = ReplaceSchedule()


class Replaceable(nn.Module):
    """A student layer or, with probability 1 - p in training, the teacher layers it replaces."""

    def __init__(self, student: nn.Module, teacher: Sequence[nn.Module]):
        super().__init__()
        self.student = student
        self.teacher = nn.ModuleList(teacher)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.p = 1.0

    def forward(self, hidden_states, *args, **kwargs):
        if not self.training or torch.rand(()) < self.p:
            return self.student(hidden_states, *args, **kwargs)
        output = hidden_states
        for layer in self.teacher:
            output = layer(hidden_states, *args, **kwargs)
            hidden_states = output[0] if isinstance(output, tuple) else output
        return output


def wrap(student: PreTrainedModel, teacher: PreTrainedModel,
         spans: Sequence[Sequence[int]]) -> list[Replaceable]:
    """Swap the student's layers for wrappers over (student layer, teacher span); in place."""
    spec = spec_for(student)
    layers, sources = encoder_layers(student, spec), encoder_layers(teacher, spec)
    if len(spans) != len(layers):
        raise LayergraftError(f"{len(spans)} teacher spans for a {len(layers)}-layer student")
    wrappers = [Replaceable(layer, [copy.deepcopy(sources[i]) for i in span])
                for layer, span in zip(layers, spans, strict=True)]
    for index, wrapper in enumerate(wrappers):
        layers[index] = wrapper
    return wrappers


def unwrap(student: PreTrainedModel) -> PreTrainedModel:
    """The compact student again: every wrapper gives back its student layer."""
    layers = encoder_layers(student, spec_for(student))
    for index, layer in enumerate(layers):
        if isinstance(layer, Replaceable):
            layers[index] = layer.student
    return student


class ScheduleCallback(TrainerCallback):
    """Sets every wrapper's p from the schedule before each optimizer step."""

    def __init__(self, wrappers: Sequence[Replaceable], schedule: ReplaceSchedule, total: int):
        self.wrappers, self.schedule, self.total = list(wrappers), schedule, total

    def on_step_begin(self, args, state, control, **kwargs):
        p = self.schedule.probability(state.global_step, self.total)
        for wrapper in self.wrappers:
            wrapper.p = p
