"""Knowledge distillation: the loss, and a teacher whose outputs are computed once.

A distillation epoch should cost about what a fine-tuning epoch of the student costs,
so the teacher runs once per (teacher weights, encoded data): its logits, and the
hidden states of the layers the student imitates (fp16, padding stripped), are saved
as safetensors in a folder named by a hash of both, and looked up by `example_id`.
A live teacher gives the same loss and is the reference the cache is tested against.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.errors import LayergraftError
from layergraft.surgery.manifest import Manifest
from layergraft.training.parallel import process_state
from layergraft.utils import atomic_write, cache_root, model_fingerprint

if TYPE_CHECKING:
    from layergraft.training.attention import AttentionTeacher

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CACHE_FORMAT = "layergraft-teacher-cache/1"
LOGITS_FILE = "logits.safetensors"


@dataclass(frozen=True)
class DistillConfig:
    """Weights of the loss terms and the softmax temperature.

    loss = logit_weight * KL(teacher_T || student_T) * T^2   (MSE on the output for
           regression) + hidden_weight * mean over student layers and examples of the
           MSE over real tokens to the teacher layer ending the student layer's span
           + task_weight * CE (MSE) on gold labels
           + attention_weight * KL of each student head's attention to its source head's
           (`layergraft.training.attention`; the teacher then runs live).

    Defaults by measurement (MiniLM-L6 movie-sentiment teacher, dev 86.0 / test 86.1%,
    graft 6 -> 3, 1 epoch, bf16, seed 0; dev / test accuracy): T=2 82.7 / 83.8,
    T=1 82.4 / 83.6, T=4 82.8 / 83.7, T=2 + task 0.5 82.5 / 83.8, T=2 + hidden 1.0
    82.8 / 83.9 (agreement with the teacher 91.1 vs 90.0% on dev). All within noise
    (+-1.2 points), so the default is the cheapest: logits only at T=2; the hidden term
    costs a teacher pass per extra layer (cached) and ~4% per step. Rechecked at the
    deeper cut with the student defaults (benchmarks/graft_ablation.py: 6 -> 2, 0.75 epoch,
    lr 4e-4, dev accuracy, mean of seeds 0 and 1): T=2 80.8, T=1 80.8, T=4 80.6,
    T=2 + hidden 1.0 80.7.
    """

    temperature: float = 2.0
    logit_weight: float = 1.0
    hidden_weight: float = 0.0
    task_weight: float = 0.0
    attention_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise LayergraftError(f"--temperature must be positive, not {self.temperature}")
        weights = (self.logit_weight, self.hidden_weight, self.task_weight,
                   self.attention_weight)
        if min(weights) < 0 or max(weights) == 0:
            raise LayergraftError(
                "distillation weights must be >= 0 with at least one positive "
                f"(got logit {self.logit_weight}, hidden {self.hidden_weight}, "
                f"task {self.task_weight})"
            )

    @property
    def uses_hidden(self) -> bool:
        return self.hidden_weight > 0

    @property
    def uses_attention(self) -> bool:
        return self.attention_weight > 0

    def to_dict(self) -> dict:
        """The settings; the attention term only when on, so older runs stay valid."""
        data = asdict(self)
        if not self.uses_attention:
            del data["attention_weight"]
        return data


def layer_map_from_manifest(manifest: Manifest) -> list[int]:
    """For each student layer, the teacher hidden-state index it imitates.

    That is the output of the teacher layer that ends the student layer's span (grafted,
    averaged or kept), so the last student layer always imitates the teacher's last layer,
    which the classifier reads; hidden_states[0] is the embeddings, so layer l is index l + 1.
    """
    return manifest.span_ends()


class TeacherOutputs(NamedTuple):
    """Teacher targets for one batch: logits [B, C] (fp32) and, per requested layer,
    the hidden states of the batch's real tokens [tokens, hidden], in the row-major
    order of `hidden[attention_mask.bool()]`."""

    logits: torch.Tensor
    hidden: list[torch.Tensor]


class Teacher(Protocol):
    def outputs(self, batch: Mapping[str, torch.Tensor],
                layers: Sequence[int] = ()) -> TeacherOutputs: ...


class LiveTeacher:
    """Runs the teacher on every batch (the reference; also what a cache is built from)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model.eval()

    def outputs(self, batch: Mapping[str, torch.Tensor],
                layers: Sequence[int] = ()) -> TeacherOutputs:
        device = next(self.model.parameters()).device
        inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=bool(layers))
        mask = inputs["attention_mask"].bool()
        target = batch["attention_mask"].device
        # a base model (no head: a sentence encoder's transformer) has no logits; its hidden
        # states alone can still be cached, for healing
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = mask.new_zeros((len(mask), 0), dtype=torch.float32)
        return TeacherOutputs(logits.float().to(target),
                              [out.hidden_states[i][mask].to(target) for i in layers])


class TeacherCache:
    """Teacher outputs for every example of one encoded split, looked up by example_id."""

    def __init__(self, logits: torch.Tensor, example_ids: torch.Tensor, offsets: torch.Tensor,
                 hidden: Mapping[int, torch.Tensor] | None = None) -> None:
        self.logits = logits
        self.offsets = offsets
        self.hidden = dict(hidden or {})
        self.position = torch.full((int(example_ids.max()) + 1,), -1, dtype=torch.long)
        self.position[example_ids] = torch.arange(len(example_ids))

    @classmethod
    def build(cls, teacher: PreTrainedModel, dataset, tokenizer: PreTrainedTokenizerBase, *,
              layers: Sequence[int] = (), cache_dir: str | os.PathLike | None = None,
              batch_size: int = 64, dtype: torch.dtype = torch.float16) -> TeacherCache:
        """Load the cache for this teacher and data, computing whatever is missing.

        Under data parallelism every rank calls this: the first process of each machine
        computes and writes (atomically), the others wait and then read the files.
        """
        directory = cache_path(teacher, dataset, cache_dir)
        with process_state().local_main_process_first():
            missing = [i for i in sorted(set(layers))
                       if not (directory / _hidden_file(i)).is_file()]
            if missing or not (directory / LOGITS_FILE).is_file():
                _compute(teacher, dataset, tokenizer, missing, batch_size, dtype, directory)
        return cls.load(directory, layers)

    @classmethod
    def load(cls, directory: str | os.PathLike, layers: Sequence[int] = ()) -> TeacherCache:
        """Read a cache folder written by `build`, with the hidden states of `layers`."""
        directory = Path(directory)
        try:
            index = load_file(directory / LOGITS_FILE)
            hidden = {i: load_file(directory / _hidden_file(i))["hidden"] for i in set(layers)}
        except FileNotFoundError as error:
            raise LayergraftError(
                f"teacher cache '{directory}' lacks {Path(error.filename).name}: build it with "
                "TeacherCache.build (or delete the folder)"
            ) from None
        return cls(index["logits"], index["example_id"], index["offsets"], hidden)

    def ordered_logits(self) -> torch.Tensor:
        """The teacher's logits for example_id 0, 1, ... (its predictions on the split)."""
        return self.logits[self.position[self.position >= 0]]

    def outputs(self, batch: Mapping[str, torch.Tensor],
                layers: Sequence[int] = ()) -> TeacherOutputs:
        ids = batch["example_id"].cpu()
        rows = self.position[ids.clamp(max=len(self.position) - 1)]
        if (ids >= len(self.position)).any() or (rows < 0).any():
            raise LayergraftError("a batch holds examples the teacher cache was not built on: "
                                  "build the cache on the same encoded split")
        device = batch["attention_mask"].device
        hidden = []
        if layers:
            starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
            if not torch.equal(lengths, batch["attention_mask"].sum(dim=1).cpu().long()):
                raise LayergraftError("the teacher cache was built on differently tokenised "
                                      "data: rebuild it with the same tokenizer and max length")
            first = torch.repeat_interleave(starts - (lengths.cumsum(0) - lengths), lengths)
            index = first + torch.arange(int(lengths.sum()))
            hidden = [self.hidden[i][index].to(device, torch.float32) for i in layers]
        return TeacherOutputs(self.logits[rows].to(device), hidden)


def distill_loss(student_logits: torch.Tensor, student_hidden: Sequence[torch.Tensor],
                 teacher: TeacherOutputs, attention_mask: torch.Tensor,
                 labels: torch.Tensor | None, config: DistillConfig) -> torch.Tensor:
    """The weighted loss of DistillConfig; one output column means regression."""
    logits = student_logits.float()
    regression = logits.shape[-1] == 1
    loss = logits.new_zeros(())
    if config.logit_weight:
        if regression:
            soft = F.mse_loss(logits, teacher.logits)
        else:
            t = config.temperature
            soft = F.kl_div(F.log_softmax(logits / t, dim=-1),
                            F.log_softmax(teacher.logits / t, dim=-1),
                            log_target=True, reduction="batchmean") * t * t
        loss = loss + config.logit_weight * soft
    if config.hidden_weight:
        loss = loss + config.hidden_weight * hidden_mse(student_hidden, teacher.hidden,
                                                         attention_mask)
    if config.task_weight:
        if labels is None:
            raise LayergraftError("task_weight > 0 needs labelled training data")
        task = (F.mse_loss(logits.squeeze(-1), labels.float()) if regression
                else F.cross_entropy(logits, labels))
        loss = loss + config.task_weight * task
    return loss


def hidden_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers and examples of each example's MSE over its real tokens.

    Every example counts once (as in the logit and task terms), so a batch's loss is the
    mean of its parts' losses and data-parallel training matches one process exactly.
    """
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=mask.device), lengths)
    terms = []
    for s, t in zip(student, teacher, strict=True):
        error = (s[mask].float() - t).square().mean(dim=-1)
        per_example = error.new_zeros(len(lengths)).index_add(0, owner, error) / lengths
        terms.append(per_example.mean())
    return torch.stack(terms).mean()


def make_distill_loss(teacher: Teacher | PreTrainedModel, config: DistillConfig, *,
                      layer_map: Sequence[int] | None = None,
                      attention: AttentionTeacher | None = None) -> Callable:
    """A `loss_fn(model, inputs) -> loss` for `layergraft.training.train.train`.

    `teacher` is a TeacherCache, a LiveTeacher or a teacher model (run live).
    `layer_map` (see layer_map_from_manifest) is needed when the hidden loss is on, and
    `attention` (`layergraft.training.attention.attention_teacher`) when the attention one is.
    """
    if isinstance(teacher, PreTrainedModel):
        teacher = LiveTeacher(teacher)
    layers = list(layer_map or ()) if config.uses_hidden else []
    if config.uses_hidden and not layers:
        raise LayergraftError("the hidden-state loss needs a layer map from the graft manifest")
    if config.uses_attention and attention is None:
        raise LayergraftError("the attention loss needs the graft manifest's head map")

    def loss_fn(model, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
        out = model(**batch, output_hidden_states=bool(layers),
                    output_attentions=config.uses_attention)
        hidden = out.hidden_states[1:] if layers else ()
        if layers and len(hidden) != len(layers):
            raise LayergraftError(f"layer map has {len(layers)} entries but the student has "
                                  f"{len(hidden)} layers")
        target = teacher.outputs({**batch, "example_id": inputs["example_id"]}, layers)
        loss = distill_loss(out.logits, hidden, target, batch["attention_mask"],
                            inputs.get("labels"), config)
        if config.uses_attention:
            loss = loss + config.attention_weight * attention.loss(out.attentions, batch)
        return loss

    return loss_fn


def cache_path(teacher: PreTrainedModel, dataset,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of this teacher on this encoded data (content-hashed names)."""
    return (cache_root(cache_dir) / "teacher" / f"model-{model_fingerprint(teacher)}"
            / f"data-{dataset_fingerprint(dataset)}")


def dataset_fingerprint(dataset) -> str:
    """Hash of the model inputs and example ids of an encoded split, row for row."""
    columns = sorted(c for c in dataset.column_names if c in (*MODEL_INPUTS, "example_id"))
    table = dataset.select_columns(columns).with_format("arrow")[:]
    digest = hashlib.sha256()
    for column in columns:
        digest.update(column.encode())
        digest.update(json.dumps(table.column(column).to_pylist()).encode())
    return digest.hexdigest()[:16]


def _hidden_file(layer: int) -> str:
    return f"hidden-{layer}.safetensors"


def _compute(teacher: PreTrainedModel, dataset, tokenizer: PreTrainedTokenizerBase,
             layers: Sequence[int], batch_size: int, dtype: torch.dtype,
             directory: Path) -> None:
    from layergraft.data.encoding import by_length, loader

    live = LiveTeacher(teacher)
    logits, ids, lengths = [], [], []
    hidden: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    device = next(teacher.parameters()).device
    for batch in loader(by_length(dataset), tokenizer, batch_size):
        out = live.outputs({k: v.to(device) for k, v in batch.items()}, layers)
        logits.append(out.logits.cpu())
        ids.append(batch["example_id"].cpu())
        lengths.append(batch["attention_mask"].sum(dim=1).cpu().long())
        for i, states in zip(layers, out.hidden, strict=True):
            hidden[i].append(states.to(dtype).cpu())
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cat(lengths).cumsum(0)])
    meta = {"format": CACHE_FORMAT, "model": directory.parent.name, "data": directory.name}
    directory.mkdir(parents=True, exist_ok=True)
    for i, states in hidden.items():
        _save_atomic({"hidden": torch.cat(states)}, directory / _hidden_file(i),
                     {**meta, "layer": str(i)})
    _save_atomic({"logits": torch.cat(logits), "example_id": torch.cat(ids).long(),
                  "offsets": offsets}, directory / LOGITS_FILE, meta)


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors written atomically: never half a cache."""
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()},
                                             tmp, metadata=metadata))
