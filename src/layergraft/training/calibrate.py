"""The judge of `--choose-by reconstruction`: span errors of candidate layers on calibration texts.

It is local healing's measurement (`heal.layer_errors`) before any training: the input
model's hidden states on the calibration texts are cached once (`TeacherCache`), and all
candidate layers of one span, stacked as the layers of one throwaway model, read the state
at the span's start and are compared with the state at its end over real tokens, in one
pass per batch. The texts are a fixed sample of the training split (seed 0 whatever the
run's seed), so every run of a grid calibrates on the same texts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import loader
from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ArchSpec, spec_for
from layergraft.surgery.recipes import LayerRecipe, apply_recipes
from layergraft.training.distill import TeacherCache
from layergraft.training.heal import layer_errors

CALIBRATION_BATCH = 32


def calibration_texts(train, count: int):
    """`count` examples of an encoded training split (all if it has fewer), drawn with
    seed 0 and kept in their order."""
    if not len(train):
        raise LayergraftError("--choose-by reconstruction needs training texts to calibrate "
                              "on, but the training split is empty")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
    return train.select(sorted(order.tolist()))


class ReconstructionJudge:
    """Span errors against `model` (the input of the surgery) on the encoded `texts`."""

    def __init__(self, model: PreTrainedModel, texts, tokenizer: PreTrainedTokenizerBase, *,
                 cache_dir: str | os.PathLike | None = None,
                 batch_size: int = CALIBRATION_BATCH, spec: ArchSpec | None = None) -> None:
        self.model, self.texts, self.tokenizer = model, texts, tokenizer
        self.cache_dir, self.batch_size = cache_dir, batch_size
        self.spec = spec or spec_for(model)

    def info(self) -> dict:
        return {"texts": len(self.texts), "batch_size": self.batch_size}

    def __call__(self, spans: Sequence[tuple[int, int]],
                 candidates: Sequence[Sequence[LayerRecipe]]) -> list[list[float]]:
        states = sorted({i for span in spans for i in span})
        teacher = TeacherCache.build(self.model, self.texts, self.tokenizer, layers=states,
                                     cache_dir=self.cache_dir, batch_size=self.batch_size)
        batches = list(loader(self.texts, self.tokenizer, self.batch_size))
        device = next(self.model.parameters()).device
        errors = []
        for span, recipes in zip(spans, candidates, strict=True):
            stack = apply_recipes(self.model, recipes, self.spec).to(device)
            errors.append(layer_errors(stack, teacher, batches, [span] * len(recipes),
                                       self.spec))
        return errors
