"""Loading models with clear errors, and saving them atomically without silent overwrite.

`load_classifier` (public as `layergraft.load`) gives a sequence classifier and its tokenizer;
`load_trained` refuses a model whose classification head was never trained, and
`load_for_task` also checks that the model's head fits a task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from layergraft.data.encoding import fit_tokenizer
from layergraft.errors import LayergraftError
from layergraft.surgery.arch import spec_for_config
from layergraft.surgery.manifest import Manifest

if TYPE_CHECKING:
    from layergraft.data.tasks import Task

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
UNTRAINED_HEAD_SEED = 0  # the new head of a base encoder, the same for every command

logger = logging.getLogger(__name__)
_warned_untrained: set[str] = set()


def default_model_path() -> str:
    """The built-in offline all-MiniLM-L6-v2 (the default model of the demo and tests)."""
    from layergraft.assets import minilm_path

    return str(minilm_path())


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A folder or hub name as given; a built-in name ('minilm', 'mpnet') means its folder.

    A name written as a path that is not there is refused here, in one line: the hub would
    answer with its repo-id rules, which say nothing about a mistyped folder."""
    from layergraft.assets import builtin_path

    builtin = builtin_path(str(name_or_path))
    if builtin is not None:
        return str(builtin)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if _written_as_path(name) and not path.exists():
        raise LayergraftError(
            f"no such folder: '{name}' does not exist; give the folder of a saved model, a "
            "hub name (with a network) or a built-in model (minilm, mpnet)")
    return str(path) if name.startswith("~") else name


_HUB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _written_as_path(name: str) -> bool:
    """Whether a model name can only be a path: it starts with ./ ../ / or ~, or holds a
    path separator without being a hub id's one 'namespace/name'."""
    separators = {os.sep, os.altsep or os.sep}
    if name.startswith((".", "~")) or name[:1] in separators or Path(name).is_absolute():
        return True
    return any(sep in name for sep in separators) and not (
        _HUB_ID.fullmatch(name) and ".." not in name)


@contextlib.contextmanager
def refusing_pickled_code(name_or_path: str) -> Iterator[None]:
    """Loading weights inside it: a `pytorch_model.bin` that holds pickled code (refused by
    torch's weights-only loader, rightly) is one line naming the safe format, not a trace."""
    try:
        yield
    except pickle.UnpicklingError as error:
        bins = sorted(p.name for p in Path(name_or_path).rglob("*.bin"))
        files = ", ".join(bins) or "its weights"
        if "weights only load failed" in str(error).lower():
            problem = f"refusing '{name_or_path}': {files} holds pickled code, not only tensors"
        else:
            problem = f"cannot load '{name_or_path}': {files} is not a readable tensor file"
        raise LayergraftError(
            f"{problem}; safetensors is the safe format: get the model as model.safetensors, "
            "or convert a copy you trust (from_pretrained(..., weights_only=False), then "
            "save_pretrained, which writes model.safetensors)"
        ) from None


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
    fine-tuned teacher is never silently re-initialised. A new head is expected, so
    transformers' load report (which lists its missing weights) is not printed.
    """
    name_or_path = resolve_model(name_or_path)
    config = load_config(name_or_path)
    kwargs = {}
    new_head = not has_classifier(config)
    if num_labels is not None and new_head and num_labels != config.num_labels:
        kwargs = {"num_labels": num_labels}
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
    with (_transformers_quiet() if new_head else contextlib.nullcontext(),
          refusing_pickled_code(name_or_path)):
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    tokenizer = fit_tokenizer(AutoTokenizer.from_pretrained(name_or_path), model.config)
    return model.eval(), tokenizer


def untrained_head(name_or_path: str, allow_untrained_head: bool = False) -> bool:
    """Whether the model's classification head was never trained (none of its config's
    `architectures` is a *ForSequenceClassification: a base encoder, `minilm` as installed).
    Such a model is refused unless `allow_untrained_head`; then one warning line is logged,
    once per model and process."""
    config = load_config(name_or_path)
    if has_classifier(config):
        return False
    name = str(name_or_path)
    if not allow_untrained_head:
        raise LayergraftError(
            f"'{name}' has no trained classification head (its config lists "
            f"{', '.join(getattr(config, 'architectures', None) or ()) or 'no architectures'}): "
            f"train one first with `layergraft finetune {name} --task TASK --out DIR` and use "
            "DIR, or pass --untrained-head (Python: allow_untrained_head=True) to go on with a "
            "random head"
        )
    if name not in _warned_untrained:
        _warned_untrained.add(name)
        logger.warning(f"warning: '{name}' has no trained classification head: going on with "
                       "a random one (--untrained-head), so its task scores mean nothing; "
                       "train one with `layergraft finetune` first")
    return True


def load_trained(
    name_or_path: str, num_labels: int | None = None, *, allow_untrained_head: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_classifier` for a model whose head was trained; a base encoder is refused
    unless `allow_untrained_head` (`untrained_head`). Its new head is then seeded with
    UNTRAINED_HEAD_SEED, so every command sees the same one."""
    if not untrained_head(name_or_path, allow_untrained_head):
        return load_classifier(name_or_path, num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_HEAD_SEED)
        return load_classifier(name_or_path, num_labels)


@contextlib.contextmanager
def _transformers_quiet():
    """transformers' logging at ERROR level for the duration (no warnings, no load report)."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


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


def load_for_task(model_path: str, task: Task, *, allow_untrained_head: bool = False
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer, checked against the task; a model without a trained head is
    refused unless `allow_untrained_head` (then its new head is sized for the task)."""
    from layergraft.data.tasks import check_model_fits

    model, tokenizer = load_trained(model_path, task.spec.num_labels,
                                    allow_untrained_head=allow_untrained_head)
    check_model_fits(task.spec, model.config)
    return model, tokenizer
