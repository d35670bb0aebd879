"""Training on a task with the transformers ``Trainer``: teachers (through
:func:`layergraft.pipeline.finetune.finetune`) and any later training of a compressed student
(:func:`train` with a custom ``loss_fn``; :func:`student_training` holds a student's defaults).

The Trainer supplies seeding, bf16 autocast, checkpoints with exact resume (optimizer,
scheduler, RNG and data-order state), evaluation on dev with the task's primary metric, early
stopping, loading the best checkpoint at the end, a progress bar, and data-parallel training
under ``accelerate launch`` / ``torchrun`` with no change here.

Default hyper-parameters (:class:`TrainConfig`) were chosen by measurement: all-MiniLM-L6-v2
on movie-sentiment, the same Trainer recipe in bf16 (run on one GPU to afford the grid), dev
accuracy (1,040 sentences) at the end of training, seed 0 unless noted:

==============================  =======================================
lr 2e-5 / 5e-5 / 1e-4 / 2e-4    85.6 / 85.0 / 85.0 / 85.9 (3 epochs)
lr 5e-5 / 1e-4, 2 epochs        85.9 / 86.2
lr 5e-5 / 1e-4, 5 epochs        84.1 / 84.7 (best epoch 85.2 / 84.8)
batch 16 (lr 5e-5 / 1e-4)       84.7 / 84.7 (3 epochs; batch 32 elsewhere)
lr 5e-5, 3 epochs, seed 1       84.6
==============================  =======================================

All of it lies within 84-86%, inside twice the dev set's standard error (1.1 points), so the
choice is about cost and safety: 2 epochs are as good as 3 or 5 and a third cheaper than 3;
batch 16 doubles the steps for nothing; 5e-5 sits mid-plateau and inside the usual BERT-base
range, so it also suits larger hub encoders. Longer runs are guarded by early stopping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import (
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import EvalPrediction, get_last_checkpoint

from layergraft.data.encoding import EXAMPLE_ID, LABELS, collator, encode
from layergraft.data.metrics import METRICS, compute_metrics
from layergraft.data.tasks import Task, TaskSpec, check_model_fits
from layergraft.errors import LayergraftError
from layergraft.runtime import Runtime
from layergraft.training.schedule import OneSchedule

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class TrainConfig:
    """What a training run needs beyond model and data; defaults are the measured ones.

    ``eval_every`` is ``"epoch"`` or a number of optimizer steps; checkpoints are saved at the
    same points (the best one is reloaded at the end). ``max_steps`` (> 0) overrides
    ``epochs``. ``group_by_length`` draws batches of similar length (HF's length-grouped
    sampler), which pads movie sentences about half as much and trains faster on CPU; off by
    default, since it changes which examples share a batch. ``early_stopping_patience``
    counts evaluations without improvement of the primary dev metric (None: never stop
    early). ``resume`` continues from the last checkpoint
    in ``output_dir`` if there is one. ``precision`` and ``device`` are resolved by
    `layergraft.runtime` (``auto``: bf16 autocast only where the hardware computes it natively).
    ``inherited_learning_rate`` is the peak rate of the weights a student inherited unchanged
    (embeddings, head, intact layers: `train`'s ``inherited``), ``learning_rate`` then that of
    its new layers only: a whole-model rate that suits a fresh graft can wreck a wide model's
    intact layers (DESIGN section 12). ``layer_decay`` (0 < d <= 1) lowers the rate layer by
    layer towards the input (`layer_decay_scales`; ELECTRA, BEiT): the lower layers, which
    matter most for BERT (Sajjad et al. 2020), move least.
    """

    output_dir: str
    epochs: float = 2.0
    max_steps: int | None = None
    learning_rate: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    early_stopping_patience: int | None = 2
    eval_every: str | int = "epoch"
    max_length: int = 128
    progress: bool = True
    resume: bool = True
    save_total_limit: int = 2
    logging_steps: int = 50
    group_by_length: bool = False
    inherited_learning_rate: float | None = None  # see `TaskTrainer`; None: one rate for all
    layer_decay: float | None = None  # layer-wise rate decay (`layer_decay_scales`); None: off

    def __post_init__(self) -> None:
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise LayergraftError(f"--lr-layer-decay takes a factor in (0, 1], e.g. 0.9, not "
                                  f"{self.layer_decay}")

    def runtime(self) -> Runtime:
        return Runtime.resolve(self.device, self.precision)

    def training_arguments(self, spec: TaskSpec) -> TrainingArguments:
        runtime = self.runtime()
        if not 0 <= self.warmup_ratio < 1:
            raise LayergraftError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.eval_every == "epoch":
            schedule = {"eval_strategy": "epoch", "save_strategy": "epoch"}
        elif isinstance(self.eval_every, int) and self.eval_every > 0:
            schedule = {"eval_strategy": "steps", "save_strategy": "steps",
                        "eval_steps": self.eval_every, "save_steps": self.eval_every}
        else:
            raise LayergraftError(f"eval_every must be 'epoch' or a positive number of steps, "
                                  f"got {self.eval_every!r}")
        return TrainingArguments(
            output_dir=self.output_dir,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps or -1,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.eval_batch_size,
            warmup_steps=self.warmup_ratio,  # a float < 1 is a fraction of all steps
            weight_decay=self.weight_decay,
            seed=self.seed,
            data_seed=self.seed,
            train_sampling_strategy="group_by_length" if self.group_by_length else "random",
            bf16=runtime.precision == "bf16",
            fp16=runtime.precision == "fp16",
            use_cpu=runtime.device.type == "cpu",  # bf16 then means CPU autocast
            **schedule,
            save_total_limit=self.save_total_limit,
            load_best_model_at_end=True,
            metric_for_best_model=spec.primary_metric,
            greater_is_better=METRICS[spec.primary_metric].higher_is_better,
            restore_callback_states_from_checkpoint=True,
            logging_steps=self.logging_steps,
            disable_tqdm=not self.progress,
            report_to="none",
            remove_unused_columns=False,  # example_id must reach compute_loss (loss_fn)
            average_tokens_across_devices=False,
        )


# A surgically shrunk student recovers fastest at a much higher peak learning rate than
# fine-tuning's 5e-5 (benchmarks/graft_ablation.py, MiniLM movie-sentiment, 6 -> 2 layers,
# 0.75 epoch of distillation, dev accuracy, mean of seeds 0 and 1; graft / keep-alternate):
# 5e-5 77.2 / 75.4, 1e-4 77.4 / 76.1, 2e-4 78.8 / 77.1, 4e-4 80.8 / 78.4, 8e-4 80.7 / 80.0.
# Graft peaks at 4e-4; keep-alternate wants still more, since it starts further away.
STUDENT_LEARNING_RATE = 4e-4


def student_training(learning_rate: float | None = None, *,
                     group_by_length: bool = False) -> TrainConfig:
    """A student's training settings: the measured student learning rate unless one is given."""
    return TrainConfig(output_dir="", learning_rate=learning_rate or STUDENT_LEARNING_RATE,
                       group_by_length=group_by_length)


@dataclass
class TrainResult:
    """The trained model (best dev checkpoint's weights) and how it got there."""

    model: PreTrainedModel
    metrics: dict[str, float]
    global_step: int
    train_seconds: float
    best_checkpoint: str | None
    log_history: list[dict]
    dev_predictions: np.ndarray | None = None  # the returned weights' outputs on dev
    dev_labels: np.ndarray | None = None


class TrainingClock(TrainerCallback, ExportableState):
    """Seconds of training that led to the current state, across resumes: the count is saved
    with every checkpoint and restored with the other callback states when a run resumes
    (the Trainer then replaces this callback by a restored copy: read the one it holds), so a
    resumed run reports its whole training time, not only the part after the resume. Time
    after the last checkpoint of an interrupted run is not counted: that work was redone."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lap_start: float | None = None

    def state(self) -> dict:
        self._lap()
        return {"args": {}, "attributes": {"seconds": self.seconds}}

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._lap_start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self._lap()
        self._lap_start = None

    def _lap(self) -> None:
        if self._lap_start is not None:
            now = time.perf_counter()
            self.seconds += now - self._lap_start
            self._lap_start = now


@dataclass(frozen=True)
class ParameterRates:
    """Peak rates of their own: the weights a student inherited unchanged (`names`, at
    `learning_rate`; None: the run's rate) and per-parameter factors on top (`scales`,
    name -> factor: layer-wise decay)."""

    names: frozenset[str] = frozenset()
    learning_rate: float | None = None
    scales: tuple[tuple[str, float], ...] = ()

    def split(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
        """Split each of the Trainer's parameter groups (decay / no decay) by rate: the run's
        part first, then the inherited part, each by factor in parameter order; deterministic,
        so a checkpoint's optimizer state fits the groups of a resumed run. The scheduler,
        made afterwards, scales every group alike."""
        names = {id(p): name for name, p in model.named_parameters()}
        inherited = self.learning_rate is not None
        scales = dict(self.scales)
        groups = []
        for group in optimizer.param_groups:
            for own in (False, True):
                base = self.learning_rate if own else group["lr"]
                by_rate: dict[float, list] = {}
                for p in group["params"]:
                    if (inherited and names[id(p)] in self.names) == own:
                        rate = base * scales.get(names[id(p)], 1.0)
                        by_rate.setdefault(rate, []).append(p)
                groups += [{**group, "params": params, "lr": rate}
                           for rate, params in by_rate.items()]
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)


def layer_decay_scales(model: torch.nn.Module, layers: Sequence[torch.nn.Module],
                       decay: float | None) -> dict[str, float]:
    """Layer-wise decay's factor of every parameter (name -> factor): of L layers, layer i
    (0 at the input) trains at decay^(L - 1 - i) of its rate, the embeddings at decay^L, the
    rest (head, pooler, final norm) at the full rate; {} when `decay` is None."""
    if decay is None:
        return {}
    depth = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    scales = {}
    for name, p in model.named_parameters():
        if id(p) in depth:
            scales[name] = decay ** (len(layers) - 1 - depth[id(p)])
        elif "embeddings." in name:
            scales[name] = decay ** len(layers)
    return scales


class TaskTrainer(Trainer):
    """A Trainer that keeps ``example_id`` away from ``model.forward`` and, when given a
    ``loss_fn``, trains on it instead of the model's own loss (evaluation always reports the
    model's task loss, so dev metrics mean the same for every loss). With a ``schedule``
    (`layergraft.training.schedule.OneSchedule`) its run is one stage of a longer one: the
    optimizer inherits that run's state and the learning rate follows that run's curve (a
    checkpoint resumed within the stage then restores both as usual)."""

    # compute_loss returns a per-batch mean; the Trainer must divide it for accumulation.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, loss_fn: LossFn | None = None,
                 schedule: OneSchedule | None = None,
                 rates: ParameterRates | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.schedule = schedule
        self.rates = rates
        self.model_accepts_loss_kwargs = False  # no token-count rescaling of sentence losses

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.rates is not None:
            self.rates.split(optimizer, self.model)
        if fresh and self.schedule is not None:
            self.schedule.seed(optimizer, self.model)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.schedule is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = self.schedule.scheduler(
            optimizer or self.optimizer, self.args.get_warmup_steps(self.schedule.total))
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_fn is not None and model.training and not return_outputs:
            return self.loss_fn(model, inputs)
        inputs = {k: v for k, v in inputs.items() if k != EXAMPLE_ID}
        outputs = model(**inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {k: v for k, v in inputs.items() if k != EXAMPLE_ID}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task | datasets.DatasetDict,
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    *,
    spec: TaskSpec | None = None,
    schedule: OneSchedule | None = None,
    inherited: Collection[str] = (),
    scales: Mapping[str, float] | None = None,
) -> TrainResult:
    """Train ``model`` on the train split, evaluating on dev, and return it with the best
    dev checkpoint's weights loaded.

    ``task`` is a :class:`Task` or an already encoded DatasetDict (then pass its ``spec``).
    ``loss_fn(model, batch)`` gets the whole batch, ``labels`` and ``example_id`` included, and
    returns the loss to minimise (default: the model's own task loss). Under data parallelism
    ``model`` there is the wrapped model: call it, don't reach into its attributes.
    ``schedule`` makes this run one stage of a longer one (`TaskTrainer`); it then holds where
    the next stage starts and what it inherits. ``inherited`` names the parameters that
    train at ``config.inherited_learning_rate`` (when it is set); ``scales`` (name -> factor)
    multiplies a parameter's rate (``config.layer_decay``'s factors, `layer_decay_scales`).
    """
    if isinstance(task, Task):
        spec = task.spec
        encoded = encode(task, tokenizer, config.max_length, splits=["train", "dev"])
    elif spec is None:
        raise TypeError("train() on an encoded DatasetDict needs spec=TaskSpec")
    else:
        encoded = task
    check_model_fits(spec, model.config)
    for split in ("train", "dev"):
        if split not in encoded or LABELS not in encoded[split].column_names:
            raise LayergraftError(f"task {spec.name} needs a labeled {split} split to train")
    args = config.training_arguments(spec)

    def score(prediction: EvalPrediction) -> dict[str, float]:
        return compute_metrics(spec.metrics, prediction.predictions, prediction.label_ids,
                               regression=spec.is_regression)

    patience = config.early_stopping_patience
    stopping = [EarlyStoppingCallback(patience)] if patience else []
    trainer = TaskTrainer(
        model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["dev"],
        data_collator=collator(tokenizer), compute_metrics=score,
        callbacks=[*stopping, TrainingClock(), *callbacks], loss_fn=loss_fn, schedule=schedule,
        rates=(ParameterRates(frozenset(inherited), config.inherited_learning_rate,
                              tuple(sorted((scales or {}).items())))
               if config.inherited_learning_rate is not None or scales else None),
    )
    if not config.progress:
        trainer.remove_callback(PrinterCallback)
    last = get_last_checkpoint(config.output_dir) if config.resume and Path(
        config.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    clock = next(c for c in trainer.callback_handler.callbacks if isinstance(c, TrainingClock))
    if schedule is not None:
        schedule.finish(trainer.state.global_step, trainer.optimizer, trainer.model)
    final = trainer.predict(encoded["dev"])  # scores the loaded best weights, unlogged
    metrics = {name: float(final.metrics[f"test_{name}"]) for name in spec.metrics}
    return TrainResult(model=trainer.model, metrics=metrics, global_step=trainer.state.global_step,
                       train_seconds=clock.seconds,
                       best_checkpoint=trainer.state.best_model_checkpoint,
                       log_history=list(trainer.state.log_history),
                       dev_predictions=final.predictions, dev_labels=final.label_ids)
