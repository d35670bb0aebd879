"""A classifier grid's files: the rows as results.json / results.csv after every run, then
report.md / report.html with the result tables, plots and the teacher's analysis maps."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from layergraft.report.rows import SHAPE_BENCH
from layergraft.utils import write_json_atomic

ROWS_JSON = "results.json"
ROWS_CSV = "results.csv"


def write_rows(rows: Sequence[Mapping], out_dir: str | os.PathLike) -> None:
    from layergraft.report.tables import write_csv

    write_json_atomic(Path(out_dir) / ROWS_JSON, list(rows))
    write_csv(rows, Path(out_dir) / ROWS_CSV)


def write_comparison_report(rows: Sequence[Mapping], out_dir: str | os.PathLike,
                            title: str, analysis_dir: str | os.PathLike | None = None):
    """report.md / report.html with the result tables and plots, plus the analysis maps."""
    from layergraft.report.render import write_report
    from layergraft.scoring.analysis import HEAD_PLOT, NEURON_PLOT, SIMILARITY_PLOT

    captions = {"Teacher: similarity between layers": SIMILARITY_PLOT,
                "Teacher: head importance": HEAD_PLOT,
                "Teacher: neuron importance": NEURON_PLOT}
    images = {}
    if analysis_dir is not None:
        images = {caption: Path(analysis_dir) / name for caption, name in captions.items()
                  if (Path(analysis_dir) / name).is_file()}
    return write_report(rows, out_dir, title, images, intro=_speed_note(rows, Path(out_dir)))


def _speed_note(rows: Sequence[Mapping], out: Path) -> str:
    """How the report's speed-ups were measured, where they are one figure per shape."""
    bench = out / SHAPE_BENCH
    if not any("shape" in row for row in rows) or not bench.is_file():
        return ""
    table = json.loads(bench.read_text())
    return (f"Speed-up: one figure per student shape (depth, FFN width, heads), each shape "
            f"timed once with the teacher interleaved in one run ({table['reference']} as "
            f"the reference, batch {table['batch_size']}, {table['lengths']} lengths, "
            f"{table['threads']} thread(s), {table['device']}, CPU {table['cpu']}); every "
            f"row of a shape carries it. Each run's own timing stays in its results.json.")


