"""Throughput, latency and size of several models measured in one run -> records.

Speed ratios are only meaningful when teacher and student see the same batches on the
same machine at the same moment, so `measure_speed` times every model on identical
batches (same sampled examples, dynamic padding to each batch's longest), with the same
threads, after warm-up, and interleaves the models inside every repeat (in rotating
order) so that noise from other processes hits all of them alike. Batches hold random
token ids (speed does not depend on them) but real lengths and attention masks (or, for
`seq_lens`, one fixed length and no padding). Each model can run on several backends
(`layergraft.deploy.backends`): every (model, backend) pair is one runner in the rotation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import encode, usable_positions
from layergraft.data.tasks import Task
from layergraft.deploy.backends import ExportedModel, Runner, TorchRunner, default_backend
from layergraft.errors import LayergraftError
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


def count_parameters(model: PreTrainedModel | ExportedModel) -> tuple[int, int | None]:
    """(all parameters, those in the encoder layers); tied weights are counted once. An
    export folder counts its graph's weights and cannot tell the encoder's apart."""
    if isinstance(model, ExportedModel):
        return model.num_parameters(), None
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
    runners: Mapping[tuple[str, str], Runner | str] | None = None,
) -> list[dict]:
    """One record per (model, backend, lengths, batch size): throughput, latency, parameters,
    size.

    `input_lengths` are the real token lengths of the task's examples, one list for all
    models or one per model (different tokenizers: the same examples, their own
    lengths). Each repeat runs every model once over the same batches holding about
    `examples_per_repeat` examples; `warmup` untimed passes per model come first.
    Throughput (examples/s) and latency (ms per batch) are medians over repeats. The
    first model is the reference of `throughput_ratio` (see `speed_ratio`) and of
    `ideal_ratio` (its depth over this model's depth). After the real lengths, each of
    `seq_lens` times batches of the same examples cut or stretched to that many tokens (no
    padding); a record's `lengths` says which it measured: "real" or the fixed length.
    `runners` maps (model, backend) to its runner, or to why that backend cannot run here
    (recorded as `skipped`); by default each model runs in PyTorch in `precision`. The
    reference of the ratios is then the first pair that runs.
    """
    if not models:
        raise LayergraftError("give at least one model to measure")
    if repeats < 1 or warmup < 0 or min(batch_sizes, default=0) < 1:
        raise LayergraftError("repeats and batch sizes must be at least 1, warmup at least 0")
    per_model = _lengths_per_model(models, input_lengths)
    n_examples = len(next(iter(per_model.values())))
    _check_seq_lens(models, seq_lens)
    runtime = Runtime(_common_device(models), precision)
    paths = paths or {}
    runners = runners or {(name, default_backend(precision)): TorchRunner(
        default_backend(precision), model, runtime) for name, model in models.items()}
    live = {pair: r for pair, r in runners.items() if isinstance(r, Runner)}
    if not live:
        raise LayergraftError("no backend can run here: every one was skipped (see the notes)")
    counts = {name: count_parameters(model) for name, model in models.items()}
    rows = []
    cases = [("real", batch_size) for batch_size in batch_sizes]
    cases += [(int(n), batch_size) for n in seq_lens for batch_size in batch_sizes]
    with _settings(threads, models) as used_threads:
        for lengths, batch_size in cases:
            seen = per_model if lengths == "real" else {m: [lengths] * n_examples for m in models}
            n_batches = max(1, math.ceil(examples_per_repeat / batch_size))
            indices = sample_batches(n_examples, batch_size, n_batches, seed)
            batches = {name: _batches(model, seen[name], indices, seed)
                       for name, model in models.items()}
            prepared = {pair: r.prepare(batches[pair[0]]) for pair, r in live.items()}
            seconds = _time_interleaved(live, prepared, repeats, warmup)
            settings = {"batch_size": batch_size, "lengths": lengths, "threads": used_threads,
                        "warmup": warmup, "seed": seed}
            for (name, backend), runner in runners.items():
                model = models[name]
                if not isinstance(runner, Runner):
                    rows.append({"model": name, "backend": backend, "batch_size": batch_size,
                                 "lengths": lengths, "layers": num_layers(model.config),
                                 "skipped": runner})
                    continue
                size = runner.size_bytes or safetensors_size(paths.get(name))
                rows.append(_record(name, model, counts[name], batches[name],
                                    seconds[name, backend],
                                    [seen[name][i] for batch in indices for i in batch],
                                    size, {**settings, **runner.record()}))
    reference, reference_backend = next(iter(live))
    for row in rows:
        if "skipped" in row:
            continue
        case = row["batch_size"], row["lengths"]
        depth = _find(rows, reference, *case, reference_backend)["layers"]
        row["throughput_ratio"] = speed_ratio(rows, row["model"], reference, *case,
                                              backend=row["backend"],
                                              reference_backend=reference_backend)
        row["ideal_ratio"] = depth / row["layers"] if row["layers"] else None
    return rows


def speed_ratio(rows: Sequence[Mapping], student: str, teacher: str, batch_size: int,
                lengths: str | int = "real", *, backend: str | None = None,
                reference_backend: str | None = None) -> float:
    """How many times faster `student` runs than `teacher` at one batch size (and `lengths`:
    "real" or a fixed length), in one run; `backend` and `reference_backend` pick each one's
    backend (default: its first record).

    The median over repeats of teacher time / student time within each repeat: the
    models were interleaved, so each pair ran at nearly the same moment and slow load
    changes from other processes cancel out of the ratio.
    """
    fast = _find(rows, student, batch_size, lengths, backend)
    slow = _find(rows, teacher, batch_size, lengths, reference_backend)
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
            limit = usable_positions(model.config)
            if limit is not None and n > limit:
                raise LayergraftError(f"--seq-len {n} is more tokens than '{name}' takes "
                                      f"({limit} positions)")


def _common_device(models: Mapping[str, PreTrainedModel]) -> torch.device:
    devices = {m.device for m in models.values()}
    if len(devices) != 1:
        raise LayergraftError("put every model on the same device before measuring speed")
    return devices.pop()


def _batches(model, lengths, indices, seed) -> list[dict[str, torch.Tensor]]:
    """CPU batches; each runner moves them where it runs (`Runner.prepare`)."""
    config = model.config
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(seed)
    return [padded_batch([lengths[i] for i in batch], config.vocab_size, pad, generator)
            for batch in indices]


def _time_interleaved(runners: Mapping[tuple[str, str], Runner], batches, repeats,
                      warmup) -> dict[tuple[str, str], list[float]]:
    """Seconds per repeat for each (model, backend); the order rotates from repeat to repeat."""
    pairs = list(runners)
    for pair in pairs:
        for _ in range(warmup):
            runners[pair].timed(batches[pair])
    seconds: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    for r in range(repeats):
        for pair in pairs[r % len(pairs):] + pairs[:r % len(pairs)]:
            seconds[pair].append(runners[pair].timed(batches[pair]))
    return seconds


@contextlib.contextmanager
def _settings(threads: int | None, models: Mapping[str, PreTrainedModel]) -> Iterator[int]:
    """Eval mode and the thread count for the run; both restored afterwards."""
    models = {name: m for name, m in models.items() if isinstance(m, torch.nn.Module)}
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
          lengths: str | int = "real", backend: str | None = None) -> Mapping:
    for row in rows:
        if ((row["model"], row["batch_size"], row.get("lengths", "real")) == (name, batch_size,
                                                                             lengths)
                and backend in (None, row.get("backend")) and "skipped" not in row):
            return row
    on = f" on {backend}" if backend else ""
    raise LayergraftError(f"no speed record for '{name}'{on} at batch size {batch_size} "
                          f"({lengths} lengths)")


def _record(name, model, counts, batches, seconds, lengths, size_bytes, settings) -> dict:
    """`lengths`: the token count of every example in one repeat, in batch order."""
    total, encoder = counts
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
    """Speed records as an aligned plain-text table, one line per model, backend and batch
    size (with the task metric and retention where they were scored)."""
    header = ("model", "backend", "tokens", "batch", "layers", "params", "MB", "examples/s",
              "ms/batch", "speed-up", "ideal", "metric", "retention")
    cells = []
    for r in rows:
        where = (str(r["model"]), str(r.get("backend", "torch")), str(r.get("lengths", "real")),
                 str(r["batch_size"]), str(r["layers"]))
        if "skipped" in r:
            cells.append((*where, *["-"] * 8))
            continue
        cells.append((*where, f"{r['params'] / 1e6:.1f}M",
                      f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "-",
                      f"{r['throughput']:.1f}", f"{r['latency_ms']:.2f}",
                      f"{r['throughput_ratio']:.2f}x",
                      f"{r['ideal_ratio']:.2f}x" if r.get("ideal_ratio") else "-",
                      f"{100 * r['value']:.2f}" if "value" in r else "-",
                      f"{100 * r['retention']:.1f}%" if r.get("retention") is not None else "-"))
    return text_table(header, cells)


def skipped_notes(rows: Sequence[Mapping]) -> list[str]:
    """One note per skipped (model, backend): why it did not run."""
    seen = dict.fromkeys(f"note: {r['backend']} skipped for {r['model']}: {r['skipped']}"
                         for r in rows if "skipped" in r)
    return list(seen)
