"""`layergraft analyze`: unit importance and layer similarity from one pass over the data.

The same forward pass feeds the importance gradients and the hidden states for CKA.
`measure` runs it on a seeded sample of a task (`AnalysisSettings`). Results are records
first (safetensors + JSON, written atomically), pictures second (`plots`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.errors import LayergraftError
from layergraft.runtime import Runtime
from layergraft.scoring import plots
from layergraft.scoring.importance import Batch, ImportanceScores, Pool, score_importance
from layergraft.scoring.similarity import LayerSimilarity
from layergraft.surgery.arch import ArchSpec, ffn_width, num_heads, num_layers
from layergraft.utils import atomic_write, model_fingerprint, versions, write_json_atomic

if TYPE_CHECKING:
    from layergraft.data.tasks import Task

FORMAT = "layergraft-analysis/1"
IMPORTANCE_FILE = "importance.safetensors"
SIMILARITY_FILE = "similarity.safetensors"
SUMMARY_FILE = "analysis.json"
SIMILARITY_PLOT = "similarity.png"
HEAD_PLOT = "head_importance.png"
NEURON_PLOT = "neuron_importance.png"


@dataclass(frozen=True)
class AnalysisSettings:
    """How importance and similarity are measured (DESIGN sections 4-5)."""

    samples: int = 2000
    split: str = "train"
    batch_size: int = 64
    max_length: int = 128
    importance: str = "michel"
    loss: str = "task"
    normalize: bool = False
    seed: int = 0
    progress: bool = True


@dataclass
class Analysis:
    """Importance scores, CKA [L+1, L+1] (0 = embeddings), adjacent cosine [L], provenance."""

    scores: ImportanceScores
    cka: torch.Tensor
    adjacent_cosine: torch.Tensor
    info: dict = field(default_factory=dict)

    def check_fits(self, model: PreTrainedModel, where: str | os.PathLike,
                   spec: ArchSpec | None = None) -> None:
        """Refuse to apply this analysis to a model it was not measured on: the layers, heads
        and FFN width of its scores must be the model's, and so must the fingerprint it
        recorded (analyses from before fingerprints were recorded are checked by shape)."""
        fix = "run `layergraft analyze` on this model and pass that folder"
        head, neuron = self.scores.head, self.scores.neuron
        depths = {head.shape[0], neuron.shape[0], self.cka.shape[0] - 1,
                  self.adjacent_cosine.shape[0]}
        measured = (head.shape[0], head.shape[1], neuron.shape[1])
        actual = (num_layers(model.config), num_heads(model.config), ffn_width(model, spec))
        if depths != {actual[0]} or measured != actual:
            raise LayergraftError(
                f"the analysis in '{where}' was measured on a model with {_shape(*measured)}, "
                f"but this model has {_shape(*actual)}: {fix}")
        recorded = (self.info.get("model") or {}).get("fingerprint")
        if recorded is not None and recorded != (found := model_fingerprint(model)):
            raise LayergraftError(
                f"the analysis in '{where}' was measured on another model (fingerprint "
                f"{recorded}; this model's is {found}), although of the same shape: {fix}")

    def graft_inputs(self) -> dict:
        """The keyword arguments `layergraft.surgery.graft.graft_model` takes from an analysis."""
        return dict(head_scores=self.scores.head, neuron_scores=self.scores.neuron,
                    cka=self.cka, adjacent_cosine=self.adjacent_cosine,
                    importance_info={**self.info, "scores": self.scores.info})


def analyze_model(
    model: PreTrainedModel,
    batches: Iterable[Batch],
    *,
    importance: str = "michel",
    loss: str = "task",
    normalize: bool = False,
    progress: bool = True,
    spec: ArchSpec | None = None,
    pool: Pool | None = None,
) -> Analysis:
    """Score heads and neurons and measure layer similarity on `batches`, in one pass
    (`pool`: the sentence embedding, for loss "embedding")."""
    fingerprint = model_fingerprint(model)  # before a forward pass sets config.problem_type
    similarity = LayerSimilarity()
    scores = score_importance(model, batches, method=importance, loss=loss, normalize=normalize,
                              progress=progress, spec=spec, observe=similarity.update,
                              pool=pool)
    info = {
        "model": {"name_or_path": str(getattr(model.config, "_name_or_path", "") or ""),
                  "model_type": model.config.model_type,
                  "num_layers": num_layers(model.config),
                  "num_heads": num_heads(model.config),
                  "ffn_width": ffn_width(model, spec),
                  "fingerprint": fingerprint},
        "examples": scores.info["examples"],
        "tokens": similarity.tokens,
    }
    return Analysis(scores=scores, cka=similarity.cka(),
                    adjacent_cosine=similarity.adjacent_cosine(), info=info)


def _shape(layers: int, heads: int, ffn: int) -> str:
    return f"{layers} layers, {heads} heads, FFN width {ffn}"


def analysis_batches(task: Task, tokenizer: PreTrainedTokenizerBase,
                     settings: AnalysisSettings) -> DataLoader:
    """A seeded sample of one split, tokenised and batched with dynamic padding."""
    from layergraft.data.encoding import encode, loader

    if settings.split not in task.splits:
        raise LayergraftError(
            f"task '{task.spec.name}' has no '{settings.split}' split "
            f"(it has {', '.join(task.splits)})"
        )
    encoded = encode(task, tokenizer, settings.max_length, splits=[settings.split])
    encoded = encoded[settings.split].shuffle(seed=settings.seed)
    encoded = encoded.select(range(min(settings.samples, len(encoded))))
    return loader(encoded, tokenizer, settings.batch_size)


def measure(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task,
            settings: AnalysisSettings = AnalysisSettings(), *,
            precision: str = "fp32") -> Analysis:
    """Importance and similarity of an already loaded model on a sample of the task, where
    the model is, under the autocast of a resolved `precision` (see `layergraft.runtime`)."""
    runtime = Runtime(next(model.parameters()).device, precision)
    with runtime.autocast():
        analysis = analyze_model(model, analysis_batches(task, tokenizer, settings),
                                 importance=settings.importance, loss=settings.loss,
                                 normalize=settings.normalize, progress=settings.progress)
    analysis.info["runtime"] = runtime.record()
    return analysis


def save_analysis(analysis: Analysis, out_dir: str | os.PathLike) -> Path:
    """Write the records (safetensors, analysis.json) and the three PNGs into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_scores(analysis.scores, out / IMPORTANCE_FILE)
    atomic_write(out / SIMILARITY_FILE, lambda path: safetensors.torch.save_file(
        {"cka": analysis.cka.contiguous(),
         "adjacent_cosine": analysis.adjacent_cosine.contiguous()}, path))
    write_json_atomic(out / SUMMARY_FILE, {
        "format": FORMAT,
        "info": analysis.info,
        "importance": analysis.scores.info,
        "versions": versions(),
        "cka": analysis.cka.tolist(),
        "adjacent_cosine": analysis.adjacent_cosine.tolist(),
        "head_importance": analysis.scores.head.tolist(),
    })
    atomic_write(out / SIMILARITY_PLOT,
                  lambda path: plots.plot_similarity(analysis.cka, analysis.adjacent_cosine, path))
    atomic_write(out / HEAD_PLOT, lambda path: plots.plot_head_importance(
        analysis.scores.head, path))
    atomic_write(out / NEURON_PLOT, lambda path: plots.plot_neuron_importance(
        analysis.scores.neuron, path))
    return out


def load_analysis(directory: str | os.PathLike) -> Analysis:
    """Read back what `save_analysis` wrote, exactly."""
    folder = Path(directory)
    summary_path = folder / SUMMARY_FILE
    if not summary_path.is_file():
        raise LayergraftError(
            f"'{folder}' holds no layergraft analysis: run `layergraft analyze` to make one"
        )
    summary = json.loads(summary_path.read_text())
    if summary.get("format") != FORMAT:
        raise LayergraftError(f"'{summary_path}' is not a layergraft analysis "
                              f"(format {summary.get('format')!r})")
    similarity = safetensors.torch.load_file(folder / SIMILARITY_FILE)
    return Analysis(scores=load_scores(folder / IMPORTANCE_FILE), cka=similarity["cka"],
                    adjacent_cosine=similarity["adjacent_cosine"], info=summary["info"])


def save_scores(scores: ImportanceScores, path: str | os.PathLike) -> None:
    """Scores as safetensors, with their info as JSON in the file's metadata."""
    atomic_write(Path(path), lambda tmp: safetensors.torch.save_file(
        {"head": scores.head.contiguous(), "neuron": scores.neuron.contiguous()}, tmp,
        metadata={"info": json.dumps(scores.info)}))


def load_scores(path: str | os.PathLike) -> ImportanceScores:
    with safetensors.safe_open(path, framework="pt") as handle:
        info = json.loads((handle.metadata() or {}).get("info", "{}"))
        return ImportanceScores(head=handle.get_tensor("head"),
                                neuron=handle.get_tensor("neuron"), info=info)
