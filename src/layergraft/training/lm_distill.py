"""Distillation of a causal LM: next-token KL against the teacher's cached top-k, and
hidden-state MSE at chosen layers.

**Why top-k.** A teacher's full next-token distributions cost vocab x 4 bytes a position
(49,152 x 4 = 197 kB for SmolLM2: 40 GB for 200k tokens). The cache keeps, per position, the
ids (int32) and log-probabilities at temperature T (fp16) of the teacher's k most likely
tokens: k = 64 is 384 bytes a position.

**Why a remainder bucket rather than renormalising the top-k.** The top-k does not hold all
the mass: SmolLM2-135M's top 16 / 64 / 256 / 1024 tokens hold 66 / 77 / 86 / 94% of it at
T = 1 and 10 / 16 / 25 / 41% at T = 2 (mean over one 1,024-token window of movie-text test).
So the loss compares the two distributions coarsened to k + 1 outcomes: the teacher's k
tokens one by one, and "any other token" as one bucket, whose teacher mass is 1 - sum of the
k probabilities and whose student mass is the student's (exact, from its full softmax) over
the rest of the vocabulary. That is the exact KL of the coarsened distributions, a lower
bound of the full KL that meets it when the tail is empty. Renormalising would drop a quarter
of the teacher's mass at T = 1 and most of it at T = 2, and would not see a student that
moves mass off the teacher's support (its renormalised top-k can match while most of its mass
sits elsewhere). The loss is KL * T^2, averaged over every position of every block (each
position has a teacher distribution, the last one of a block too).

**The cache** is keyed like `layergraft.training.distill.TeacherCache`: a folder named by the
teacher's fingerprint, the blocks' content hash, and (for the top-k) k and T. Hidden states at
the requested layers (`hidden_states` indices: 0 is the embeddings; the last one is after the
final norm, as transformers returns it) are stored once per teacher and blocks (fp16). Both
are looked up by block index (`example_id`). A live teacher gives the same targets; it is the
reference the cache is tested against.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import PreTrainedModel

from layergraft.data.encoding import EXAMPLE_ID
from layergraft.errors import LayergraftError
from layergraft.training.distill import _save_atomic, hidden_mse
from layergraft.training.parallel import process_state
from layergraft.utils import cache_root, model_fingerprint

CACHE_FORMAT = "layergraft-lm-teacher-cache/1"
TOPK_FILE = "topk.safetensors"


@dataclass(frozen=True)
class LMDistillConfig:
    """loss = logit_weight * top-k KL at temperature T * T^2 + hidden_weight * mean over the
    mapped layers of the MSE of student to teacher hidden states.

    T = 1 distils the next-token distribution itself, as LLM distillation usually does, and
    keeps most of it in the top-k (77% at k = 64, module doc; at T = 2 the bucket would carry
    84%); k = 64 keeps the cache at 384 bytes a token. Training with them is not measured yet.
    """

    temperature: float = 1.0
    top_k: int = 64
    logit_weight: float = 1.0
    hidden_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.top_k < 1:
            raise LayergraftError(f"the LM distillation needs temperature > 0 and top-k >= 1 "
                                  f"(got {self.temperature}, {self.top_k})")
        if min(self.logit_weight, self.hidden_weight) < 0 or not (self.logit_weight
                                                                   or self.hidden_weight):
            raise LayergraftError("LM distillation weights must be >= 0 with one positive")


class LMTargets(NamedTuple):
    """Teacher targets of a batch of blocks [B, L]: top-k log-probabilities at T (float32)
    and token ids [B, L, k], and per requested layer the hidden states [B * L, hidden]."""

    log_probs: torch.Tensor
    indices: torch.Tensor
    hidden: list[torch.Tensor]


def teacher_targets(teacher: PreTrainedModel, input_ids: torch.Tensor, *, top_k: int,
                    temperature: float, layers: Sequence[int] = ()) -> LMTargets:
    """The live teacher's targets for blocks [B, L] (what the cache stores)."""
    if top_k >= teacher.config.vocab_size:
        raise LayergraftError(f"top-k {top_k} must be below the vocabulary size "
                              f"({teacher.config.vocab_size}): the remainder needs a token")
    device = next(teacher.parameters()).device
    with torch.no_grad():
        out = teacher.eval()(input_ids=input_ids.to(device), use_cache=False,
                             output_hidden_states=bool(layers))
        values, indices = torch.topk(F.log_softmax(out.logits.float() / temperature, -1), top_k)
    target = input_ids.device
    return LMTargets(values.to(target), indices.to(target),
                     [out.hidden_states[i].flatten(0, 1).float().to(target) for i in layers])


def topk_kl(student_logits: torch.Tensor, log_probs: torch.Tensor, indices: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """KL(teacher || student) over the teacher's top-k plus one remainder bucket (module
    doc), at temperature T, times T^2, averaged over positions."""
    scaled = student_logits.float() / temperature
    norm = scaled.logsumexp(-1)
    student_top = scaled.gather(-1, indices) - norm[..., None]
    # the student's log-mass off the teacher's support; a finite fill keeps gradients finite
    student_rest = scaled.scatter(-1, indices, torch.finfo(scaled.dtype).min).logsumexp(-1) - norm
    teacher_top = log_probs.float()
    teacher_rest = (1 - teacher_top.exp().sum(-1)).clamp(min=0)
    kl = ((teacher_top.exp() * (teacher_top - student_top)).sum(-1)
          + torch.xlogy(teacher_rest, teacher_rest) - teacher_rest * student_rest)
    return kl.mean() * temperature ** 2


def lm_distill_loss(student_logits: torch.Tensor, student_hidden: Sequence[torch.Tensor],
                    targets: LMTargets, config: LMDistillConfig) -> torch.Tensor:
    """The weighted loss of LMDistillConfig for one batch of full blocks (no padding)."""
    loss = student_logits.new_zeros((), dtype=torch.float32)
    if config.logit_weight:
        loss = loss + config.logit_weight * topk_kl(student_logits, targets.log_probs,
                                                    targets.indices, config.temperature)
    if config.hidden_weight:
        mask = torch.ones(student_logits.shape[:2], dtype=torch.long,
                          device=student_logits.device)
        loss = loss + config.hidden_weight * hidden_mse(student_hidden, targets.hidden, mask)
    return loss


class LMTeacherCache:
    """Top-k targets (and hidden states) for every block of one block tensor, by index."""

    def __init__(self, log_probs: torch.Tensor, indices: torch.Tensor,
                 hidden: Mapping[int, torch.Tensor] | None = None, *, temperature: float) -> None:
        self.log_probs, self.indices = log_probs, indices
        self.hidden = dict(hidden or {})
        self.temperature = temperature

    @classmethod
    def build(cls, teacher: PreTrainedModel, blocks: torch.Tensor, *, top_k: int = 64,
              temperature: float = 1.0, layers: Sequence[int] = (),
              cache_dir: str | os.PathLike | None = None, batch_size: int = 2,
              dtype: torch.dtype = torch.float16) -> LMTeacherCache:
        """Load the cache of this teacher on these blocks, computing what is missing (under
        data parallelism the first process of each machine writes, the others then read)."""
        data = lm_cache_path(teacher, blocks, cache_dir)
        topk = data / _topk_folder(top_k, temperature)
        with process_state().local_main_process_first():
            missing = [i for i in sorted(set(layers)) if not (data / _hidden_file(i)).is_file()]
            if missing or not (topk / TOPK_FILE).is_file():
                _compute(teacher, blocks, top_k, temperature, missing, batch_size, dtype,
                         data, topk)
        return cls.load(topk, layers)

    @classmethod
    def load(cls, directory: str | os.PathLike, layers: Sequence[int] = ()) -> LMTeacherCache:
        """Read a top-k folder written by `build` (hidden states from the folder above it)."""
        directory = Path(directory)
        files = [directory / TOPK_FILE, *(directory.parent / _hidden_file(i) for i in layers)]
        missing = next((f for f in files if not f.is_file()), None)
        if missing is not None:
            raise LayergraftError(f"LM teacher cache '{directory}' lacks {missing.name}: build "
                                  "it with LMTeacherCache.build (or delete the folder)")
        topk = load_file(files[0])
        hidden = {i: load_file(directory.parent / _hidden_file(i))["hidden"] for i in set(layers)}
        return cls(topk["log_probs"], topk["indices"], hidden,
                   temperature=float(topk["temperature"]))

    def targets(self, block_ids: torch.Tensor, layers: Sequence[int] = ()) -> LMTargets:
        """The cached targets of blocks `block_ids` (indices into the built block tensor)."""
        ids = block_ids.cpu().long()
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(self.log_probs)):
            raise LayergraftError("a batch holds blocks the LM teacher cache was not built "
                                  "on: build the cache on the same blocks")
        device = block_ids.device
        return LMTargets(self.log_probs[ids].to(device, torch.float32),
                         self.indices[ids].to(device, torch.long),
                         [self.hidden[i][ids].flatten(0, 1).to(device, torch.float32)
                          for i in layers])


def make_lm_distill_loss(cache: LMTeacherCache | PreTrainedModel, config: LMDistillConfig, *,
                         layer_map: Sequence[int] | None = None) -> Callable:
    """A `loss_fn(model, inputs) -> loss` for `layergraft.training.train.train` on block
    batches (`input_ids` [B, L] and `example_id`, the block index, for a cache). `cache` is an
    LMTeacherCache or a teacher model (run live). `layer_map` (one teacher `hidden_states`
    index per student layer) is needed when the hidden loss is on."""
    layers = list(layer_map or ()) if config.hidden_weight else []
    if config.hidden_weight and not layers:
        raise LayergraftError("the hidden-state loss needs a layer map (one teacher layer per "
                              "student layer)")

    def loss_fn(model, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = model(input_ids=inputs["input_ids"], use_cache=False,
                    output_hidden_states=bool(layers))
        hidden = out.hidden_states[1:] if layers else ()
        if layers and len(hidden) != len(layers):
            raise LayergraftError(f"layer map has {len(layers)} entries but the student has "
                                  f"{len(hidden)} layers")
        if isinstance(cache, PreTrainedModel):
            targets = teacher_targets(cache, inputs["input_ids"], top_k=config.top_k,
                                      temperature=config.temperature, layers=layers)
        else:
            if abs(cache.temperature - config.temperature) > 1e-9:
                raise LayergraftError(f"the LM teacher cache holds temperature "
                                      f"{cache.temperature}, not {config.temperature}")
            targets = cache.targets(inputs[EXAMPLE_ID], layers)
        return lm_distill_loss(out.logits, hidden, targets, config)

    return loss_fn


def lm_cache_path(teacher: PreTrainedModel, blocks: torch.Tensor,
                  cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of this teacher on these blocks (content-hashed names)."""
    return (cache_root(cache_dir) / "lm-teacher" / f"model-{model_fingerprint(teacher)}"
            / f"data-{blocks_fingerprint(blocks)}")


def blocks_fingerprint(blocks: torch.Tensor) -> str:
    """Hash of the block tensor's shape and token ids, row for row."""
    ids = blocks.detach().cpu().long().contiguous()
    digest = hashlib.sha256(str(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()[:16]


def _topk_folder(top_k: int, temperature: float) -> str:
    return f"top{top_k}-T{temperature:g}"


def _hidden_file(layer: int) -> str:
    return f"hidden-{layer}.safetensors"


def _compute(teacher: PreTrainedModel, blocks: torch.Tensor, top_k: int, temperature: float,
             layers: Sequence[int], batch_size: int, dtype: torch.dtype, data: Path,
             topk: Path) -> None:
    log_probs, indices, hidden = [], [], {i: [] for i in layers}
    for batch in blocks.split(max(1, batch_size)):
        out = teacher_targets(teacher, batch, top_k=top_k, temperature=temperature,
                              layers=layers)
        log_probs.append(out.log_probs.to(dtype))
        indices.append(out.indices.to(torch.int32))
        for i, states in zip(layers, out.hidden, strict=True):
            hidden[i].append(states.view(len(batch), blocks.shape[1], -1).to(dtype))
    meta = {"format": CACHE_FORMAT, "model": data.parent.name, "data": data.name}
    for i, states in hidden.items():
        _save_atomic({"hidden": torch.cat(states)}, data / _hidden_file(i),
                     {**meta, "layer": str(i)})
    _save_atomic({"log_probs": torch.cat(log_probs), "indices": torch.cat(indices),
                  "temperature": torch.tensor(float(temperature), dtype=torch.float64)},
                 topk / TOPK_FILE, {**meta, "top_k": str(top_k), "temperature": str(temperature)})
