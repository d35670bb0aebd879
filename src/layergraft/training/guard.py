"""The collapse guard: a student whose training ran away is trained again, slower.

A freshly cut wide model trained at a rate that suits a narrow one can fall into predicting
one class (BENCHMARKS.md, 12 layers: graft at 1/8 of the budget ended at 53%, every dev
sentence one class) or see its loss climb. After each training stage the guard reads the
returned weights' dev outputs and the logged losses; on a collapse it restores the stage's
starting weights (the last state known to be good: nothing is saved inside a stage that a
collapse has not already touched) and trains again at half the peak rate (inherited rate
too), at most `retries` times. Every restart is reported, so results say what happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel

from layergraft.training.train import TrainConfig, TrainResult

ONE_CLASS_SHARE = 0.99  # of dev predictions in one class, where the labels are not so
LOSS_RISE = 1.5  # the last logged training loss over the first one


@dataclass(frozen=True)
class CollapseGuard:
    """How many restarts at half the rate a training stage may take (0: none)."""

    retries: int = 2

    def to_dict(self) -> dict:
        return {"retries": self.retries, "one_class_share": ONE_CLASS_SHARE,
                "loss_rise": LOSS_RISE}


def collapse_reason(result: TrainResult, regression: bool) -> str | None:
    """Why `result` counts as collapsed, in a few words, or None."""
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    if any(not math.isfinite(loss) for loss in losses):
        return "the training loss is not finite"
    if len(losses) > 1 and losses[-1] > LOSS_RISE * losses[0]:
        return f"the training loss rose from {losses[0]:.3g} to {losses[-1]:.3g}"
    if result.dev_predictions is None or result.dev_labels is None:
        return None
    outputs = np.asarray(result.dev_predictions)
    labels = np.asarray(result.dev_labels)
    if regression:
        spread, wanted = float(outputs.std()), float(labels.std())
        return ("every dev prediction is the same value"
                if wanted > 0 and spread < 0.01 * wanted else None)
    predicted = outputs.argmax(-1)
    share = np.bincount(predicted).max() / len(predicted)
    natural = np.bincount(labels.astype(int)).max() / len(labels)
    if share >= ONE_CLASS_SHARE and natural < ONE_CLASS_SHARE:
        return f"{100 * share:.1f}% of dev predictions are one class"
    return None


def train_guarded(model: PreTrainedModel, config: TrainConfig, guard: CollapseGuard,
                  regression: bool,
                  run: Callable[[PreTrainedModel, TrainConfig], TrainResult],
                  ) -> tuple[TrainResult, list[dict]]:
    """`run(model, config)` (one training stage), restarted from `model`'s starting weights
    at half the rate after each collapse; returns the last result and the restarts (each:
    its rates, why it was stopped, its dev metrics). A restart trains into its own checkpoint
    folder, so an interrupted guarded stage resumes where it was."""
    if not guard.retries:
        return run(model, config), []
    start = {name: value.detach().clone() for name, value in model.state_dict().items()}
    restarts: list[dict] = []
    attempt_config = config
    while True:
        result = run(model, attempt_config)
        reason = collapse_reason(result, regression)
        if reason is None or len(restarts) >= guard.retries:
            return result, restarts
        restarts.append({"learning_rate": attempt_config.learning_rate,
                         "inherited_learning_rate": attempt_config.inherited_learning_rate,
                         "reason": reason, "dev": result.metrics})
        model.load_state_dict(start)
        inherited = attempt_config.inherited_learning_rate
        attempt_config = replace(
            config, output_dir=str(Path(config.output_dir) / f"restart-{len(restarts)}"),
            learning_rate=attempt_config.learning_rate / 2,
            inherited_learning_rate=inherited / 2 if inherited is not None else None)
