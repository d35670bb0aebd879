"""`bench_models`: saved models (or export folders) -> every (model, backend) timed in one run.

Loads each model and the lengths its own tokenizer gives a split, builds a runner per
(model, backend) (exporting to ONNX where an onnx backend needs it), times them all together
with `bench.measure_speed`, and scores each pair on a task split when asked
(`bench_quality`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from layergraft.data.tasks import Task, load_task
from layergraft.deploy.backends import (
    ONNX_GRAPHS,
    ExportedModel,
    TorchRunner,
    build_runner,
    default_backend,
    is_export_folder,
    parse_backends,
)
from layergraft.errors import LayergraftError
from layergraft.models import load_classifier, load_config
from layergraft.pipeline import bench_quality
from layergraft.pipeline.bench import measure_speed, task_lengths
from layergraft.runtime import Runtime


def bench_models(
    paths: Sequence[str],
    task: str | Task,
    *,
    split: str = "dev",
    max_length: int = 128,
    device: str = "auto",
    precision: str = "auto",
    backends: Sequence[str] | None = None,
    score_split: str | None = None,
    cache_dir: str | Path | None = None,
    **options,
) -> list[dict]:
    """Load saved classifiers and measure them on a task split's real length distribution.

    Each model gets the lengths its own tokenizer gives the same examples; the first
    model is the reference. Models run on `device` in `precision` (see `layergraft.runtime`),
    or on every one of `backends` (`layergraft.deploy.backends.BACKENDS`), all in one run.
    The onnx backends export each model to `cache_dir` (default: a temporary folder) unless
    it is an export folder already. `score_split` also scores every (model, backend) on that
    labelled split (`bench_quality`). `options` go to `measure_speed`.
    """
    runtime = Runtime.resolve(device, precision)
    if len(set(paths)) != len(paths):
        raise LayergraftError("the same model is named twice: give each model once")
    task = load_task(task) if isinstance(task, str) else task
    if split not in task.splits:
        raise LayergraftError(f"task {task.spec.name} has no '{split}' split; "
                              f"choose one of {', '.join(task.splits)}")
    names = parse_backends(backends) if backends else None
    models, tokenizers, lengths = {}, {}, {}
    for path in paths:
        models[path], tokenizers[path] = _load(path, runtime)
        lengths[path] = task_lengths(task, tokenizers[path], split, max_length)
    with _workspace(cache_dir) as cache:
        runners = _runners(models, names, runtime, options.get("threads"),
                           export_backends(paths, names or (), cache, task))
        rows = measure_speed(models, lengths, paths={p: p for p in paths},
                             precision=runtime.precision, runners=runners, **options)
        if score_split is not None:
            scores = bench_quality.score(runners, models, tokenizers, task, score_split,
                                         max_length)
            bench_quality.add_quality(rows, scores)
    return rows


def _load(path: str, runtime: Runtime):
    """A classifier on the run's device, or an export folder's stand-in, and its tokenizer."""
    if not is_export_folder(path):
        model, tokenizer = load_classifier(path)
        return model.to(runtime.device), tokenizer
    from transformers import AutoTokenizer

    from layergraft.data.encoding import fit_tokenizer

    config = load_config(path)
    return ExportedModel.load(path, config), fit_tokenizer(AutoTokenizer.from_pretrained(path),
                                                           config)


def _runners(models, names, runtime: Runtime, threads: int | None, folders) -> dict:
    """Every (model, backend) pair's runner, or why it is skipped; without `names`, each
    model in PyTorch in the run's precision (as it is asked, native or not)."""
    if names is None:
        backend = default_backend(runtime.precision)
        return {(name, backend): TorchRunner(backend, model, runtime)
                for name, model in models.items()}
    threads = threads or torch.get_num_threads()
    return {(name, backend): build_runner(backend, model, runtime, threads, folders.get(name))
            for name, model in models.items() for backend in names}


def export_backends(paths: Sequence[str], names: Sequence[str], cache: Path,
             task: Task) -> dict[str, Path]:
    """The export folder of each model the onnx backends need: the model itself when it is
    one, else a fresh export into `cache` of the graphs they name (verified on built-in
    sentences; static int8 calibrated on the task's training texts)."""
    from layergraft.deploy.export import export_model

    graphs = [ONNX_GRAPHS[name] for name in names if name in ONNX_GRAPHS]
    if not graphs:
        return {}
    quantize = sorted({g.precision for g in graphs} - {"fp32"}) or None  # fp32 only: none
    optimize = any(g.fused for g in graphs)
    folders = {}
    for index, path in enumerate(paths):
        if is_export_folder(path):
            folders[path] = Path(path)
            continue
        folders[path] = cache / f"{index}-{Path(path).name}"
        export_model(path, folders[path], quantize=quantize, optimize=optimize,
                     calibration=task, overwrite=True, allow_untrained_head=True)
    return folders


@contextlib.contextmanager
def _workspace(cache_dir: str | Path | None) -> Iterator[Path]:
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        yield Path(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="layergraft-bench-") as folder:
        yield Path(folder)
