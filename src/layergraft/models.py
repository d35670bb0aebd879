"""Loading models with clear errors, and saving them atomically without silent overwrite.

`load_classifier` (public as `layergraft.load`) gives a sequence classifier and its tokenizer;
`load_for_task` also checks that the model's head fits a task.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import spec_for_config
from layergraft.surgery.manifest import Manifest

if TYPE_CHECKING:
    from layergraft.data.tasks import Task

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def default_model_path() -> str:
    """The built-in offline all-MiniLM-L6-v2 (the default model of the demo and tests)."""
    from layergraft.assets import minilm_path

    return str(minilm_path())


def resolve_model(name_or_path: str) -> str:
    """A folder or hub name as given; a built-in name ('minilm', 'mpnet') means its folder."""
    from layergraft.assets import builtin_path

    return str(builtin_path(name_or_path) or name_or_path)


def load_config(name_or_path: str):
    name_or_path = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LayergraftError(
            f"cannot load a model from '{name_or_path}': {first} (give a local model folder, "
            "or a hub name when a network is available)"
        ) from None
    spec_for_config(config)
    return config


def has_classifier(config) -> bool:
    """Whether a saved model already carries a sequence-classification head."""
    return any(name.endswith("ForSequenceClassification")
               for name in getattr(config, "architectures", None) or ())


def load_classifier(
    name_or_path: str, num_labels: int | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A *ForSequenceClassification model and its tokenizer, in eval mode.

    `num_labels` sizes a new head for a base encoder that has none yet; a model that
    already has a head keeps it (the caller checks that it fits the task), so a
    fine-tuned teacher is never silently re-initialised.
    """
    name_or_path = resolve_model(name_or_path)
    config = load_config(name_or_path)
    kwargs = {}
    if num_labels is not None and not has_classifier(config) and num_labels != config.num_labels:
        kwargs = {"num_labels": num_labels}
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
    model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return model.eval(), tokenizer


def holds_model(directory: str | os.PathLike) -> bool:
    return any((Path(directory) / name).exists() for name in MODEL_FILES)


def check_output_dir(directory: str | os.PathLike, overwrite: bool) -> None:
    """Refuse to replace a saved model unless the caller said so."""
    if holds_model(directory) and not overwrite:
        raise LayergraftError(
            f"'{directory}' already holds a model: choose another --out or pass --overwrite"
        )


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    directory: str | os.PathLike,
    *,
    manifest: Manifest | None = None,
    overwrite: bool = False,
) -> Path:
    """Write model, tokenizer and manifest to a temp folder, then move it into place."""
    target = Path(directory)
    check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir()  # not mkdtemp: the saved folder keeps the usual (umask) permissions
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if manifest is not None:
            manifest.save(staging)
        if target.exists():
            keep = [p for p in target.iterdir() if not (staging / p.name).exists()]
            for path in keep:  # other results in the folder survive the replacement
                path.rename(staging / path.name)
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_for_task(model_path: str, task: Task) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (with a head sized for the task when it has none yet) and tokenizer, checked."""
    from layergraft.data.tasks import check_model_fits

    model, tokenizer = load_classifier(model_path, num_labels=task.spec.num_labels)
    check_model_fits(task.spec, model.config)
    return model, tokenizer
