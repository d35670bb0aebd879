"""One speed per student shape in a comparison's report (issue 35).

A student's speed depends on its shape alone (depth, FFN width, attention heads: what its
config says), never on its weights or its recipe. Each compress run still times itself
during its evaluation, but two runs of one shape then report two figures that differ by
the machine's noise (the demo's 2-layer drop-alternate and graft at 2.58x and 2.99x), and a
Pareto front drawn through them plots noise. So, once the grid is done, compare times each
DISTINCT shape once, with one saved student of that shape, in ONE interleaved
`measure_speed` run with the teacher (`layergraft.pipeline.speedup.time_models`: torch-fp32,
batch 32, the task's dev lengths, 1 thread unless OMP_NUM_THREADS), cached under
<cache>/speed/ like `--speedup`'s table. Every row of a shape then carries that figure as
`throughput_ratio` (the run's own timing stays in its results.json and as
`run_throughput_ratio`); the recorded bench is written to `shape_speed.json` beside the rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import AutoConfig

from layergraft.data.tasks import as_source
from layergraft.models import load_for_task
from layergraft.pipeline.speedup import (
    REFERENCE_BACKEND,
    Shape,
    cached_timing,
    speed_threads,
    time_models,
)
from layergraft.report.rows import SHAPE_BENCH
from layergraft.runtime import Runtime
from layergraft.surgery.arch import num_heads, num_layers
from layergraft.training.train import student_training
from layergraft.utils import write_json_atomic


def student_shape(folder: str | os.PathLike) -> Shape:
    """A saved student's shape, as its config states it."""
    config = AutoConfig.from_pretrained(folder)
    return Shape(num_layers(config), int(config.intermediate_size), num_heads(config))


def time_students(teacher_path: str, task, students: Mapping[str, str | os.PathLike], *,
                  device: str = "auto", max_length: int | None = None,
                  cache_dir: str | os.PathLike | None = None, threads: int | None = None,
                  allow_untrained_head: bool = False) -> dict:
    """The bench of the distinct shapes among `students` (run name -> saved folder): each
    shape timed once with the teacher in one run; `runs` maps each run to its shape's row."""
    shapes = {name: student_shape(folder) for name, folder in students.items()}
    first = {shape: students[name] for name, shape in reversed(shapes.items())}
    ordered = list(dict.fromkeys(shapes.values()))
    source = as_source(task)
    resolved = Runtime.resolve(device, "fp32").device
    used = speed_threads(threads)
    length = max_length or student_training().max_length

    def measure() -> list[dict]:
        loaded = source.load()
        teacher, tokenizer = load_for_task(teacher_path, loaded,
                                           allow_untrained_head=allow_untrained_head)
        models = {s: load_for_task(str(first[s]), loaded)[0] for s in ordered}
        return time_models(teacher, tokenizer, loaded, models, backend=REFERENCE_BACKEND,
                           threads=used, device=resolved, max_length=length)

    with torch.inference_mode():
        table = cached_timing(teacher_path, source, [s.name for s in ordered], measure,
                              backend=REFERENCE_BACKEND, threads=used, device=resolved,
                              max_length=length, cache_dir=cache_dir)
    by_name = {row["shape"]: row for row in table["shapes"]}
    return {**table, "runs": {name: by_name[shape.name] for name, shape in shapes.items()}}


def with_shape_speed(rows: Sequence[Mapping], shape: Mapping) -> list[dict]:
    """A run's rows with its shape's figure as `throughput_ratio` (their own kept aside)."""
    return [{**row, "run_throughput_ratio": row.get("throughput_ratio"),
             "throughput_ratio": shape["throughput_ratio"], "shape": shape["shape"]}
            for row in rows]


def shape_rows(teacher_path: str, task, out_dir: str | os.PathLike,
               by_run: Mapping[str, Sequence[Mapping]], options: Mapping) -> dict[str, list]:
    """Every run's rows carrying its shape's speed, from one bench (written to
    `out_dir/shape_speed.json`); `options` are compare's compress options."""
    folders = {name: Path(out_dir) / "runs" / name for name in by_run}
    training = options.get("training")
    bench = time_students(teacher_path, task, folders, device=options.get("device", "auto"),
                          max_length=training.max_length if training is not None else None,
                          cache_dir=options.get("cache_dir"),
                          allow_untrained_head=options.get("allow_untrained_head", False))
    write_json_atomic(Path(out_dir) / SHAPE_BENCH, bench)
    return {name: with_shape_speed(rows, bench["runs"][name]) for name, rows in by_run.items()}
