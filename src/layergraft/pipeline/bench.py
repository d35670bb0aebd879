"""Throughput, latency and size of several models measured in one run -> records.

Speed ratios are only meaningful when teacher and student see the same batches on the
same machine at the same moment, so `measure_speed` times every model on identical
batches (same sampled examples, dynamic padding to each batch's longest), with the same
threads, after warm-up, and interleaves the models inside every repeat (in rotating
order) so that noise from other processes hits all of them alike. Batches hold random
token ids (speed does not depend on them) but real lengths and attention masks (or, for
`seq_lens`, one fixed length and no padding).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import encode
from layergraft.data.tasks import Task, load_task
from layergraft.errors import LayergraftError
from layergraft.models import load_classifier
from layergraft.report.tables import text_table
from layergraft.runtime import Runtime
from layergraft.surgery.arch import encoder_layers, num_layers
from layergraft.utils import num_parameters

# Token ids below this are special (pad/cls/sep/unk/mask) in the common vocabularies.
FIRST_WORD_ID = 5
DEFAULT_EXAMPLES_PER_REPEAT = 128


def sample_batches(
    n_examples: int, batch_size: int, n_batches: int, seed: int = 0
) -> list[list[int]]:
    """Example indices of each batch: seeded, without replacement when the set is big enough."""
    if n_examples < 1:
        raise LayergraftError("no examples to measure speed on: give a non-empty split")
    rng = np.random.default_rng(seed)
    needed = batch_size * n_batches
    flat = rng.choice(n_examples, size=needed, replace=needed > n_examples)
    return [flat[i * batch_size:(i + 1) * batch_size].tolist() for i in range(n_batches)]


def padded_batch(
    lengths: Sequence[int], vocab_size: int, pad_token_id: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random ids right-padded to the longest of `lengths`, with the matching attention mask."""
    width = max(lengths)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(FIRST_WORD_ID, vocab_size, (len(lengths), width), generator=generator)
    return {"input_ids": ids.masked_fill(mask == 0, pad_token_id), "attention_mask": mask}


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(all parameters, those in the encoder layers); tied weights are counted once."""
    return num_parameters(model), num_parameters(encoder_layers(model))


def safetensors_size(path: str | Path | None) -> int | None:
    """Bytes of the weights on disk: a .safetensors file, or all of them in a model folder."""
    if path is None:
        return None
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) if files else None


def measure_speed(
    models: Mapping[str, PreTrainedModel],
    input_lengths: Sequence[int] | Mapping[str, Sequence[int]],
    *,
    batch_sizes: Sequence[int] = (32, 1),
    seq_lens: Sequence[int] = (),
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    examples_per_repeat: int = DEFAULT_EXAMPLES_PER_REPEAT,
    precision: str = "fp32",
    seed: int = 0,
    paths: Mapping[str, str | Path] | None = None,
) -> list[dict]:
    """One record per (model, lengths, batch size): throughput, latency, parameters, size.

    `input_lengths` are the real token lengths of the task's examples, one list for all
    models or one per model (different tokenizers: the same examples, their own
    lengths). Each repeat runs every model once over the same batches holding about
    `examples_per_repeat` examples; `warmup` untimed passes per model come first.
    Throughput (examples/s) and latency (ms per batch) are medians over repeats. The
    first model is the reference of `throughput_ratio` (see `speed_ratio`) and of
    `ideal_ratio` (its depth over this model's depth). After the real lengths, each of
    `seq_lens` times batches of the same examples cut or stretched to that many tokens (no
    padding); a record's `lengths` says which it measured: "real" or the fixed length.
    """
    if not models:
        raise LayergraftError("give at least one model to measure")
    if repeats < 1 or warmup < 0 or min(batch_sizes, default=0) < 1:
        raise LayergraftError("repeats and batch sizes must be at least 1, warmup at least 0")
    per_model = _lengths_per_model(models, input_lengths)
    n_examples = len(next(iter(per_model.values())))
    _check_seq_lens(models, seq_lens)
    runtime = Runtime(_common_device(models), precision)
    device = runtime.device
    paths = paths or {}
    rows = []
    cases = [("real", batch_size) for batch_size in batch_sizes]
    cases += [(int(n), batch_size) for n in seq_lens for batch_size in batch_sizes]
    with _settings(threads, models) as used_threads:
        for lengths, batch_size in cases:
            seen = per_model if lengths == "real" else {m: [lengths] * n_examples for m in models}
            n_batches = max(1, math.ceil(examples_per_repeat / batch_size))
            indices = sample_batches(n_examples, batch_size, n_batches, seed)
            batches = {name: _batches(model, seen[name], indices, seed, device)
                       for name, model in models.items()}
            seconds = _time_interleaved(models, batches, repeats, warmup, runtime)
            settings = {"batch_size": batch_size, "lengths": lengths, "threads": used_threads,
                        **runtime.record(), "warmup": warmup, "seed": seed}
            rows += [_record(name, model, batches[name], seconds[name],
                             [seen[name][i] for batch in indices for i in batch],
                             safetensors_size(paths.get(name)), settings)
                     for name, model in models.items()]
    reference = next(iter(models))
    for row in rows:
        case = row["batch_size"], row["lengths"]
        depth = _find(rows, reference, *case)["layers"]
        row["throughput_ratio"] = speed_ratio(rows, row["model"], reference, *case)
        row["ideal_ratio"] = depth / row["layers"] if row["layers"] else None
    return rows


def speed_ratio(rows: Sequence[Mapping], student: str, teacher: str, batch_size: int,
                lengths: str | int = "real") -> float:
    """How many times faster `student` runs than `teacher` at one batch size (and `lengths`:
    "real" or a fixed length), in one run.

    The median over repeats of teacher time / student time within each repeat: the
    models were interleaved, so each pair ran at nearly the same moment and slow load
    changes from other processes cancel out of the ratio.
    """
    fast = _find(rows, student, batch_size, lengths)
    slow = _find(rows, teacher, batch_size, lengths)
    if (len(fast["repeat_seconds"]) != len(slow["repeat_seconds"])
            or fast["examples_per_repeat"] != slow["examples_per_repeat"]):
        raise LayergraftError(f"'{student}' and '{teacher}' were not measured in the same run")
    per_repeat = np.asarray(slow["repeat_seconds"]) / np.asarray(fast["repeat_seconds"])
    return float(np.median(per_repeat))


def task_lengths(
    task: Task, tokenizer: PreTrainedTokenizerBase, split: str = "dev", max_length: int = 128
) -> list[int]:
    """Token counts the model really sees on a split (special tokens in, truncated as trained)."""
    return [len(ids) for ids in encode(task, tokenizer, max_length, splits=[split])[split]
            ["input_ids"]]


def bench_models(
    paths: Sequence[str],
    task: str | Task,
    *,
    split: str = "dev",
    max_length: int = 128,
    device: str = "auto",
    precision: str = "auto",
    **options,
) -> list[dict]:
    """Load saved classifiers and measure them on a task split's real length distribution.

    Each model gets the lengths its own tokenizer gives the same examples; the first
    model is the reference. Models run on `device` in `precision` (see `layergraft.runtime`);
    `options` go to `measure_speed`.
    """
    runtime = Runtime.resolve(device, precision)
    if len(set(paths)) != len(paths):
        raise LayergraftError("the same model is named twice: give each model once")
    task = load_task(task) if isinstance(task, str) else task
    if split not in task.splits:
        raise LayergraftError(f"task {task.spec.name} has no '{split}' split; "
                              f"choose one of {', '.join(task.splits)}")
    models, lengths = {}, {}
    for path in paths:
        model, tokenizer = load_classifier(path)
        models[path] = model.to(runtime.device)
        lengths[path] = task_lengths(task, tokenizer, split, max_length)
    return measure_speed(models, lengths, paths={p: p for p in paths},
                         precision=runtime.precision, **options)


def _lengths_per_model(
    models: Mapping[str, PreTrainedModel],
    input_lengths: Sequence[int] | Mapping[str, Sequence[int]],
) -> dict[str, list[int]]:
    if isinstance(input_lengths, Mapping):
        missing = [name for name in models if name not in input_lengths]
        if missing:
            raise LayergraftError(f"no input lengths for model(s) {', '.join(missing)}")
        per_model = {name: [int(n) for n in input_lengths[name]] for name in models}
    else:
        shared = [int(n) for n in input_lengths]
        per_model = {name: shared for name in models}
    if len({len(v) for v in per_model.values()}) != 1:
        raise LayergraftError("every model needs the lengths of the same examples, in order")
    if any(n < 1 for v in per_model.values() for n in v):
        raise LayergraftError("input lengths must be positive token counts")
    return per_model


def _check_seq_lens(models: Mapping[str, PreTrainedModel], seq_lens: Sequence[int]) -> None:
    for n in seq_lens:
        if n < 1:
            raise LayergraftError(f"--seq-len must be a number of tokens, at least 1, not {n}")
        for name, model in models.items():
            limit = getattr(model.config, "max_position_embeddings", None)
            if limit is not None and n > limit:
                raise LayergraftError(f"--seq-len {n} is more tokens than '{name}' takes "
                                      f"({limit} positions)")


def _common_device(models: Mapping[str, PreTrainedModel]) -> torch.device:
    devices = {next(m.parameters()).device for m in models.values()}
    if len(devices) != 1:
        raise LayergraftError("put every model on the same device before measuring speed")
    return devices.pop()


def _batches(model, lengths, indices, seed, device) -> list[dict[str, torch.Tensor]]:
    config = model.config
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(seed)
    return [{k: v.to(device) for k, v in padded_batch(
        [lengths[i] for i in batch], config.vocab_size, pad, generator).items()}
        for batch in indices]


def _time_interleaved(models, batches, repeats, warmup,
                      runtime: Runtime) -> dict[str, list[float]]:
    """Seconds per repeat for each model; the model order rotates from repeat to repeat."""
    names = list(models)
    for name in names:
        for _ in range(warmup):
            _run(models[name], batches[name], runtime)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(_run(models[name], batches[name], runtime))
    return seconds


def _run(model, batches, runtime: Runtime) -> float:
    """Seconds for one pass over `batches`; queued GPU work is waited for on both sides."""
    with torch.inference_mode(), runtime.autocast():
        runtime.synchronize()
        start = time.perf_counter()
        for batch in batches:
            model(**batch)
        runtime.synchronize()
        return time.perf_counter() - start


@contextlib.contextmanager
def _settings(threads: int | None, models: Mapping[str, PreTrainedModel]) -> Iterator[int]:
    """Eval mode and the thread count for the run; both restored afterwards."""
    training = {name: m.training for name, m in models.items()}
    before = torch.get_num_threads()
    try:
        for m in models.values():
            m.eval()
        if threads is not None:
            torch.set_num_threads(threads)
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
        for name, m in models.items():
            m.train(training[name])


def _find(rows: Sequence[Mapping], name: str, batch_size: int,
          lengths: str | int = "real") -> Mapping:
    for row in rows:
        if (row["model"], row["batch_size"], row.get("lengths", "real")) == (name, batch_size,
                                                                            lengths):
            return row
    raise LayergraftError(f"no speed record for '{name}' at batch size {batch_size} "
                          f"({lengths} lengths)")


def _record(name, model, batches, seconds, lengths, size_bytes, settings) -> dict:
    """`lengths`: the token count of every example in one repeat, in batch order."""
    total, encoder = count_parameters(model)
    median = float(np.median(seconds))
    return {
        "model": name,
        "batch_size": settings["batch_size"],
        "throughput": len(lengths) / median,
        "latency_ms": 1000.0 * median / len(batches),
        "layers": num_layers(model.config),
        "params": total,
        "encoder_params": encoder,
        "size_bytes": size_bytes,
        "examples_per_repeat": len(lengths),
        "batches_per_repeat": len(batches),
        "mean_length": float(np.mean(lengths)),
        "mean_padded_length": float(np.mean([b["input_ids"].shape[1] for b in batches])),
        "repeats": len(seconds),
        "repeat_seconds": [float(s) for s in seconds],
        "torch": torch.__version__,
        **{k: v for k, v in settings.items() if k != "batch_size"},
    }


def format_speed_table(rows: Sequence[Mapping]) -> str:
    """Speed records as an aligned plain-text table, one line per model and batch size."""
    header = ("model", "tokens", "batch", "layers", "params", "MB", "examples/s", "ms/batch",
              "speed-up", "ideal")
    return text_table(header, [(
        str(r["model"]), str(r.get("lengths", "real")), str(r["batch_size"]), str(r["layers"]),
        f"{r['params'] / 1e6:.1f}M", f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "-",
        f"{r['throughput']:.1f}", f"{r['latency_ms']:.2f}", f"{r['throughput_ratio']:.2f}x",
        f"{r['ideal_ratio']:.2f}x" if r.get("ideal_ratio") else "-") for r in rows])
