"""Throughput, latency and size of several models measured in one run -> records.

Speed ratios are only meaningful when teacher and student see the same batches on the
same machine at the same moment, so `measure_speed` times every model on identical
batches (same sampled examples, dynamic padding to each batch's longest), with the same
threads, after warm-up, and interleaves the models inside every repeat (in rotating
order) so that noise from other processes hits all of them alike. Batches hold random
token ids (speed does not depend on them) but real lengths and attention masks.
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

from layergraft.arch import encoder_layers, num_layers
from layergraft.errors import LayergraftError

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
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in encoder_layers(model).parameters())
    return total, encoder


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
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    examples_per_repeat: int = DEFAULT_EXAMPLES_PER_REPEAT,
    bf16: bool = False,
    seed: int = 0,
    paths: Mapping[str, str | Path] | None = None,
) -> list[dict]:
    """One record per (model, batch size): throughput, latency, parameters, size on disk.

    `input_lengths` are the real token lengths of the task's examples, one list for all
    models or one per model (different tokenizers: the same examples, their own
    lengths). Each repeat runs every model once over the same batches holding about
    `examples_per_repeat` examples; `warmup` untimed passes per model come first.
    Throughput (examples/s) and latency (ms per batch) are medians over repeats. The
    first model is the reference of `throughput_ratio` and `ideal_ratio` (its depth
    over this model's depth).
    """
    if not models:
        raise LayergraftError("give at least one model to measure")
    if repeats < 1 or warmup < 0 or min(batch_sizes, default=0) < 1:
        raise LayergraftError("repeats and batch sizes must be at least 1, warmup at least 0")
    per_model = _lengths_per_model(models, input_lengths)
    device = _common_device(models)
    paths = paths or {}
    rows = []
    with _settings(threads, models) as used_threads:
        for batch_size in batch_sizes:
            n_batches = max(1, math.ceil(examples_per_repeat / batch_size))
            n_examples = len(next(iter(per_model.values())))
            indices = sample_batches(n_examples, batch_size, n_batches, seed)
            batches = {name: _batches(model, per_model[name], indices, seed, device)
                       for name, model in models.items()}
            seconds = _time_interleaved(models, batches, repeats, warmup, bf16, device)
            for name, model in models.items():
                rows.append(_record(
                    name, model, batches[name], seconds[name], per_model[name], indices,
                    batch_size=batch_size, threads=used_threads, device=device, bf16=bf16,
                    warmup=warmup, seed=seed, size_bytes=safetensors_size(paths.get(name)),
                ))
    reference = next(iter(models))
    for row in rows:
        ref = next(r for r in rows if r["model"] == reference and
                   r["batch_size"] == row["batch_size"])
        row["throughput_ratio"] = speed_ratio(rows, row["model"], reference, row["batch_size"])
        row["ideal_ratio"] = ref["layers"] / row["layers"] if row["layers"] else None
    return rows


def speed_ratio(rows: Sequence[Mapping], student: str, teacher: str, batch_size: int) -> float:
    """Student throughput / teacher throughput at one batch size, from the same run's records."""
    def throughput(name: str) -> float:
        for row in rows:
            if row["model"] == name and row["batch_size"] == batch_size:
                return float(row["throughput"])
        raise LayergraftError(f"no speed record for '{name}' at batch size {batch_size}")

    return throughput(student) / throughput(teacher)


def token_lengths(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str | tuple[str, str]],
    max_length: int | None = None,
) -> list[int]:
    """Token counts the model really sees (special tokens included, truncated as in training)."""
    if texts and isinstance(texts[0], (tuple, list)):
        encoded = tokenizer([t[0] for t in texts], [t[1] for t in texts],
                            truncation=True, max_length=max_length)
    else:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [len(ids) for ids in encoded["input_ids"]]


def bench_models(
    paths: Sequence[str],
    texts: Sequence[str | tuple[str, str]],
    **options,
) -> list[dict]:
    """Load saved classifiers and measure them on `texts` (e.g. a task's dev split).

    Each model gets the lengths its own tokenizer gives the same texts; the first model
    is the reference. `options` go to `measure_speed`.
    """
    from layergraft.modelio import load_classifier

    if len(set(paths)) != len(paths):
        raise LayergraftError("the same model is named twice: give each model once")
    models, lengths = {}, {}
    for path in paths:
        model, tokenizer = load_classifier(path)
        max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        models[path], lengths[path] = model, token_lengths(tokenizer, texts, max_length)
    return measure_speed(models, lengths, paths={p: p for p in paths}, **options)


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


def _time_interleaved(models, batches, repeats, warmup, bf16, device) -> dict[str, list[float]]:
    """Seconds per repeat for each model; the model order rotates from repeat to repeat."""
    names = list(models)
    for name in names:
        for _ in range(warmup):
            _run(models[name], batches[name], bf16, device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(_run(models[name], batches[name], bf16, device))
    return seconds


def _run(model, batches, bf16: bool, device: torch.device) -> float:
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        _synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            model(**batch)
        _synchronize(device)
        return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def _record(name, model, batches, seconds, lengths, indices, **fields) -> dict:
    total, encoder = count_parameters(model)
    n_examples = sum(len(b) for b in indices)
    median = float(np.median(seconds))
    return {
        "model": name,
        "batch_size": fields.pop("batch_size"),
        "throughput": n_examples / median,
        "latency_ms": 1000.0 * median / len(batches),
        "layers": num_layers(model.config),
        "params": total,
        "encoder_params": encoder,
        "size_bytes": fields.pop("size_bytes"),
        "examples_per_repeat": n_examples,
        "batches_per_repeat": len(batches),
        "mean_length": float(np.mean([lengths[i] for b in indices for i in b])),
        "mean_padded_length": float(np.mean([b["input_ids"].shape[1] for b in batches])),
        "repeats": len(seconds),
        "repeat_seconds": [float(s) for s in seconds],
        "device": str(fields.pop("device")),
        "torch": torch.__version__,
        **fields,
    }
