"""`compare --objective embedding`: the classifier grid's runs (`pipeline.compare`'s RunKey,
plan and resumable cells), each a `compress_embedding` folder under `out/runs/`.

The rows (teacher row first, then one per run) go to `out/results.json` and the table to
`out/report.md`, both rewritten after every run so what is done is always on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from layergraft.utils import write_bytes_atomic, write_json_atomic

ROWS_JSON = "results.json"
REPORT = "report.md"


def _compress(teacher: str, task, *, out_dir, texts=None, **options) -> dict:
    from layergraft.embeddings.compress import compress_embedding

    return compress_embedding(teacher, out=out_dir, texts=texts, task=task, **options)


def compare_embedding(teacher: str, task, out_dir: str | os.PathLike, runs: Sequence, *,
                      texts: str | os.PathLike | None = None, title: str | None = None,
                      on_result: Callable[[object, Mapping], None] | None = None,
                      **options) -> list[dict]:
    """Run (or reuse) every cell; returns the rows, the teacher's first. `options` go to
    every compress_embedding call unchanged (budget, precision, heal, eval_tasks, ...)."""
    from layergraft.embeddings.report import record_row, teacher_row
    from layergraft.pipeline.compare import grid_cells

    rows: list[dict] = []
    for key, record in grid_cells(teacher, task, out_dir, runs, options,
                                  partial(_compress, texts=texts)):
        if not rows:
            rows.append(teacher_row(record))
        rows.append({**record_row(record, key.budget), "run": key.name})
        if on_result is not None:
            on_result(key, record)
        write_embedding_report(rows, out_dir, title or f"layergraft embedding comparison: "
                                                        f"{teacher}")
    return rows


def embedding_grid_status(teacher: str, task, out_dir: str | os.PathLike, runs: Sequence, *,
                          texts: str | os.PathLike | None = None, **options) -> list[dict]:
    """`grid_status` for embedding runs: done, stale or to do, running nothing."""
    from layergraft.pipeline.compare import grid_status

    return grid_status(teacher, task, out_dir, runs, partial(_compress, texts=texts), **options)


def write_embedding_report(rows: Sequence[Mapping], out_dir: str | os.PathLike,
                           title: str) -> Path:
    """results.json (the rows) and report.md (the table) in `out_dir`, atomically."""
    from layergraft.embeddings.report import markdown

    out = Path(out_dir)
    write_json_atomic(out / ROWS_JSON, list(rows))
    text = f"# {title}\n\n{markdown(rows)}\n"
    return write_bytes_atomic(out / REPORT, text.encode())
