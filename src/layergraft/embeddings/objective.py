"""The embedding objective: loss, the teacher's embeddings cached once, and training.

loss = MSE(student embedding, teacher embedding) + cosine_weight * mean(1 - cos), on the
model's own output embeddings (pooled, and normalised where the model normalises). It is
exactly zero for the teacher against itself. Training is sentence-transformers' own
`SentenceTransformerTrainer` with its `MSELoss` (a subclass adds the cosine term), on
unlabeled text whose teacher embeddings are the labels; those are computed once per
(teacher weights, texts, max length) and kept in layergraft's cache, like the logits of a
classifier's teacher (`layergraft.training.distill`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from layergraft.data.encoding import token_limit
from layergraft.errors import LayergraftError
from layergraft.utils import atomic_write, cache_root, model_fingerprint

CACHE_FOLDER = "embedding-teacher"


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor,
                   cosine_weight: float = 0.0) -> torch.Tensor:
    """MSE between student and teacher embeddings [batch, dim], plus `cosine_weight` times
    the mean cosine distance; zero when they are equal."""
    teacher = teacher.to(student.device, student.dtype)
    loss = F.mse_loss(student, teacher)
    if cosine_weight:
        # 1 - cos(s, t) = ½ ||s/|s| - t/|t|||², which is exactly 0 (not 1e-8) when s == t
        distance = (F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)).square()
        loss = loss + cosine_weight * 0.5 * distance.sum(-1).mean()
    return loss


@dataclass(frozen=True)
class EmbeddingTraining:
    """How the student learns the teacher's embeddings (steps from the run's budget)."""

    learning_rate: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    cosine_weight: float = 0.0
    warmup_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.cosine_weight < 0:
            raise LayergraftError("embedding training needs a positive learning rate and batch "
                                  "size and a cosine weight >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_fingerprint(model) -> str:
    """Hash of a sentence-transformers model: its transformer (config and weights, as for a
    classifier) and the weights and settings of the modules after it."""
    from layergraft.embeddings.model import transformer_of

    digest = hashlib.sha256(model_fingerprint(transformer_of(model)).encode())
    for index, module in enumerate(list(model)[1:], start=1):
        config = getattr(module, "get_config_dict", dict)()
        digest.update(f"{index}:{type(module).__name__}:{json.dumps(config, default=str)}"
                      .encode())
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def texts_fingerprint(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def teacher_embeddings(teacher, texts: list[str], *, max_length: int = 128,
                       cache_dir: str | os.PathLike | None = None,
                       batch_size: int = 64) -> torch.Tensor:
    """The teacher's embeddings of `texts` [n, dim], computed once and then read back."""
    from safetensors.torch import load_file, save_file

    from layergraft.embeddings.model import embed

    key = f"{embedding_fingerprint(teacher)}-{texts_fingerprint(texts)}-{max_length}"
    path = cache_root(cache_dir) / CACHE_FOLDER / f"{key}.safetensors"
    if path.is_file():
        return load_file(path)["embedding"]
    previous = teacher.max_seq_length
    teacher.max_seq_length = token_limit(teacher.tokenizer, max_length)
    try:
        embeddings = embed(teacher, texts, batch_size).contiguous()
    finally:
        teacher.max_seq_length = previous
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"embedding": embeddings}, tmp,
                                             metadata={"texts": str(len(texts))}))
    return embeddings


def make_loss(model, cosine_weight: float = 0.0):
    """sentence-transformers' MSELoss, with `embedding_loss`'s cosine term when asked."""
    from sentence_transformers.sentence_transformer.losses import MSELoss

    if not cosine_weight:
        return MSELoss(model)

    class MSECosineLoss(MSELoss):
        def compute_loss_from_embeddings(self, embeddings, teacher_embeddings):
            return torch.stack([embedding_loss(s, t, cosine_weight)
                                for s, t in zip(embeddings, teacher_embeddings, strict=True)
                                ]).mean()

    return MSECosineLoss(model)


def train_embedding(student, texts: list[str], targets: torch.Tensor, *, steps: int,
                    config: EmbeddingTraining, work_dir: str | os.PathLike, seed: int = 0,
                    device: str = "cpu", precision: str = "fp32", loss=None) -> dict:
    """Train `student` (in place) for `steps` optimizer steps to reproduce `targets`, the
    teacher's embeddings of `texts` (by `loss`, default `make_loss`'s); returns the
    trainer's final metrics."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    if len(texts) != len(targets):
        raise LayergraftError(f"{len(texts)} texts but {len(targets)} teacher embeddings")
    student.max_seq_length = token_limit(student.tokenizer, config.max_length)
    data = Dataset.from_dict({"sentence": texts, "label": targets.float().tolist()})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(work_dir)), max_steps=steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup_ratio * steps), seed=seed, data_seed=seed,
        save_strategy="no", report_to="none", logging_steps=max(steps // 10, 1),
        disable_tqdm=True, use_cpu=str(device) == "cpu", bf16=precision == "bf16",
        fp16=precision == "fp16", dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=data,
                                         loss=loss or make_loss(student, config.cosine_weight))
    start = time.perf_counter()
    output = trainer.train()
    student.eval()
    return {"steps": int(output.global_step), "train_loss": float(output.training_loss),
            "seconds": round(time.perf_counter() - start, 2)}
