"""Local healing: each new layer learns to map its span's input to its span's output.

A graft (or a kept layer standing in for dropped neighbours) is a local approximation of the
teacher layers it replaces. Healing trains every such layer, all of its weights LayerNorms
included, on cached teacher states: its input is the teacher's hidden state at the start of
its span and its target the teacher's hidden state at the end (block-wise reconstruction, as
in post-training quantisation and LLM-Streamline's replacement training). Every layer's input
is a teacher state, so the layers train at once and independently: a step runs the student's
embeddings (without gradients) only to get the arguments its layers take (the attention mask,
MPNet's position bias), then each healed layer alone on its cached input; the other layers
and the head do not run. Layers that stand for one teacher layer (a copy) are already exact
and stay as they are. `--refit` (least squares on the FFN output projection alone) is the
closed-form special case. A decoder heals the same way on `text_windows` batches with a
`LiveTeacher`; a layer whose span ends the model is compared after the final norm, which
the teacher's last hidden state has passed.

Cost rule (how healing is charged against a run's budget, so compute comparisons stay fair):
a heal step over b examples runs h of the student's n layers forward and backward, so it
costs (b / B) * h / n of a distillation step over B examples, which runs all n (its
embeddings, head and loss are left out, in healing's disfavour); `heal_charge` rounds the
total up to whole steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import islice

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from layergraft.data.encoding import loader
from layergraft.errors import LayergraftError
from layergraft.runtime import Runtime
from layergraft.surgery.arch import ArchSpec, encoder_layers, get_submodule, spec_for
from layergraft.training.distill import MODEL_INPUTS, Teacher, TeacherCache, hidden_mse


@dataclass(frozen=True)
class HealConfig:
    """How long and how fast the new layers heal. `steps` 0 turns healing off.

    The learning rate by measurement (benchmarks/lever_ablation.py --set healing: MiniLM
    movie-sentiment teacher, 26 steps, healing alone, dev accuracy retention, seed 0; graft /
    drop-alternate): 1e-4 85.7 / 87.5 at 6 -> 3 and 66.9 / 78.5 at 6 -> 2; 1e-3 90.4 / 88.8
    and 85.2 / 86.6; 3e-3 92.2 / 89.4 and 88.0 / 87.7; 1e-2 87.9 / 83.3 and 86.7 / 85.1.
    """

    steps: int = 0
    learning_rate: float = 3e-3
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise LayergraftError("--heal needs steps >= 0, a positive learning rate and batch "
                                  f"size (got {self.steps}, {self.learning_rate}, "
                                  f"{self.batch_size})")

    def to_dict(self) -> dict:
        return asdict(self)


def heal_spans(span_ends: Sequence[int]) -> list[tuple[int, int]]:
    """(input, target) teacher hidden-state indices of each student layer (0 = embeddings):
    layer k reads what ends layer k-1's span and stands for what ends its own."""
    starts = [0, *span_ends[:-1]]
    return list(zip(starts, span_ends, strict=True))


def healable(span_ends: Sequence[int]) -> list[int]:
    """The student layers that stand for more than one teacher layer (the others are copies)."""
    return [k for k, (start, end) in enumerate(heal_spans(span_ends)) if end - start > 1]


def heal_charge(config: HealConfig, student_layers: int, healed_layers: int,
                train_batch: int) -> int:
    """Distillation steps that `config.steps` heal steps cost by the module's rule."""
    if not config.steps or not healed_layers:
        return 0
    share = (config.batch_size / train_batch) * healed_layers / student_layers
    return math.ceil(config.steps * share - 1e-9)


class _LayerArguments(Exception):
    """Raised by a pre-hook on the first layer to stop the forward once the arguments every
    layer receives (besides its hidden states) are known."""

    def __init__(self, args: tuple, kwargs: dict):
        super().__init__("layer arguments captured")
        self.args, self.kwargs = args, kwargs


def _layer_arguments(model: PreTrainedModel, inputs: Mapping, spec: ArchSpec,
                     layers: Sequence[int]) -> dict[int, tuple[tuple, dict]]:
    """What the model passes each of `layers` after the hidden states, for this batch. Every
    supported encoder passes the same mask and position terms to all of its layers, and so
    does a decoder of one attention type; there the first layer's are taken (its embeddings
    alone run). A decoder that mixes types (`layer_types`: sliding and full attention) gives
    each type its own mask, so each layer's own are taken, in one forward without gradients."""
    types = getattr(model.config, "layer_types", None) or ()
    if len(set(types)) < 2:
        captured = _first_layer_arguments(model, inputs, spec)
        return dict.fromkeys(layers, captured)
    seen: dict[int, tuple[tuple, dict]] = {}

    def keeper(k: int):
        def keep(module, args, kwargs):
            seen[k] = (args[1:], kwargs)
        return keep

    modules = encoder_layers(model, spec)
    handles = [modules[k].register_forward_pre_hook(keeper(k), with_kwargs=True)
               for k in layers]
    try:
        with torch.no_grad():
            model.base_model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _first_layer_arguments(model: PreTrainedModel, inputs: Mapping,
                           spec: ArchSpec) -> tuple[tuple, dict]:
    def capture(module, args, kwargs):
        raise _LayerArguments(args[1:], kwargs)

    handle = encoder_layers(model, spec)[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():  # a decoder's KV cache would grow with every layer run on it
            model.base_model(**inputs, **({"use_cache": False} if spec.decoder else {}))
    except _LayerArguments as captured:
        return captured.args, captured.kwargs
    finally:
        handle.remove()
    raise LayergraftError("the encoder never called its first layer; healing cannot feed it")


def _padded(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Real-token rows [tokens, hidden] back into a [batch, seq, hidden] tensor (zero padding)."""
    out = states.new_zeros((*mask.shape, states.shape[-1]))
    out[mask] = states
    return out


def span_errors(student: PreTrainedModel, teacher: TeacherCache, batches: Sequence[Mapping],
                span_ends: Sequence[int], spec: ArchSpec | None = None) -> list[float]:
    """Each student layer's token MSE to the end of its span, fed the start of its span."""
    return layer_errors(student, teacher, batches, heal_spans(span_ends), spec,
                        top=span_ends[-1])


def layer_errors(model: PreTrainedModel, teacher: Teacher, batches: Sequence[Mapping],
                 spans: Sequence[tuple[int, int]], spec: ArchSpec | None = None,
                 top: int | None = None) -> list[float]:
    """Layer k's token MSE to teacher state `spans[k][1]`, fed teacher state `spans[k][0]`
    (any spans, so candidates for one span can be layers of one model, judged in one pass),
    averaged over examples, so it does not depend on how they are batched. `top` is the
    teacher's last state (its depth): a decoder's has passed the final norm, and so does
    the output of a layer that stands for it."""
    spec = spec or spec_for(model)
    layers = list(range(len(spans)))
    totals, examples = [0.0] * len(layers), 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            size = len(batch["attention_mask"])
            losses = _layer_losses(model, teacher, batch, layers, spans, spec, top)
            totals = [t + size * float(v) for t, v in zip(totals, losses, strict=True)]
            examples += size
    return [t / max(1, examples) for t in totals]


def _layer_losses(student, teacher: Teacher, batch: Mapping, layers: Sequence[int],
                  spans: Sequence[tuple[int, int]], spec: ArchSpec,
                  top: int | None = None) -> list[torch.Tensor]:
    device = next(student.parameters()).device
    inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
    mask = inputs["attention_mask"].bool()
    wanted = sorted({i for k in layers for i in spans[k]})
    keys = {k: batch[k] for k in ("example_id",) if k in batch}  # a cache's; a live teacher's not
    states = dict(zip(wanted, teacher.outputs({**inputs, **keys}, wanted).hidden, strict=True))
    final = get_submodule(student.base_model, spec.final_norm) if spec.final_norm else None
    arguments = _layer_arguments(student, inputs, spec, layers)
    modules = encoder_layers(student, spec)
    losses = []
    for k in layers:
        start = _padded(states[spans[k][0]], mask).to(next(modules[k].parameters()).dtype)
        args, kwargs = arguments[k]
        output = modules[k](start, *args, **kwargs)
        output = output[0] if isinstance(output, tuple) else output
        if final is not None and spans[k][1] == top:
            output = final(output)
        losses.append(hidden_mse([output], [states[spans[k][1]]], inputs["attention_mask"]))
    return losses


class HealLoss:
    """Healing as a training loss of (student, batch): the sum of each layer's span MSE, fed
    the teacher state at its span's start. The layers are independent (their inputs are
    teacher states), so the sum's gradient is each layer's own."""

    def __init__(self, teacher: Teacher, span_ends: Sequence[int], layers: Sequence[int]):
        self.teacher, self.layers, self.spans = teacher, list(layers), heal_spans(span_ends)
        self.top = span_ends[-1]

    def __call__(self, student: PreTrainedModel, batch: Mapping) -> torch.Tensor:
        losses = _layer_losses(student, self.teacher, batch, self.layers, self.spans,
                               spec_for(student), self.top)
        return torch.stack(losses).sum()

    def freeze_others(self, student: PreTrainedModel) -> list[nn.Parameter]:
        """Leave only the healed layers trainable; their parameters."""
        params = [p for k in self.layers
                  for p in encoder_layers(student, spec_for(student))[k].parameters()]
        for p in student.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        return params


def take_step(loss: torch.Tensor, optimizer, schedule) -> float:
    """Backward, one optimizer and schedule step, gradients cleared: the loss's value."""
    loss.backward()
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def heal(student: PreTrainedModel, teacher_model: PreTrainedModel, train, tokenizer,
         span_ends: Sequence[int], config: HealConfig, *, runtime: Runtime,
         cache_dir=None, seed: int = 0, progress: bool = False) -> dict:
    """Heal `student` in place; returns what was done (layers, steps, seconds, span MSE on
    the first batches before and after)."""
    spec = spec_for(student)
    layers = healable(span_ends)
    spans = heal_spans(span_ends)
    indices = sorted({i for span in spans for i in span})  # every layer's error is reported
    record = {"config": config.to_dict(), "layers": layers, "spans": spans, "steps": 0}
    if not layers or not config.steps:
        return record
    teacher = TeacherCache.build(teacher_model, train, tokenizer, layers=indices,
                                 cache_dir=cache_dir)
    student.to(runtime.device)
    loss = HealLoss(teacher, span_ends, layers)
    frozen = {p: p.requires_grad for p in student.parameters()}
    params = loss.freeze_others(student)
    probe = list(islice(loader(train, tokenizer, config.batch_size), 4))
    record["mse_before"] = span_errors(student, teacher, probe, span_ends, spec)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.steps), config.steps)
    start = time.perf_counter()
    student.train()
    step = 0
    with tqdm(total=config.steps, desc="heal", disable=not progress) as bar:
        while step < config.steps:
            for batch in loader(train, tokenizer, config.batch_size, shuffle=True,
                                seed=seed + step):
                with runtime.autocast():
                    value = loss(student, batch)
                take_step(value, optimizer, schedule)
                step += 1
                bar.update()
                if step == config.steps:
                    break
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["steps"] = step
    for p, flag in frozen.items():
        p.requires_grad_(flag)
    record["mse_after"] = span_errors(student, teacher, probe, span_ends, spec)
    student.eval()
    return record
