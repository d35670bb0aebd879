"""Rows as tables: CSV files, and the formatted cells of Markdown / HTML tables."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from layergraft.report.stats import ROW_KEYS, present
from layergraft.utils import write_bytes_atomic

TABLE_COLUMNS = ("method", "strategy", "layers", "budget", "n", "value", "retention",
                 "agreement", "throughput_ratio", "params", "size_bytes", "train_seconds")
HEADERS = {"n": "seeds", "retention": "retention %", "agreement": "agreement %",
           "throughput_ratio": "speed-up", "size_bytes": "on disk", "train_seconds": "train s"}
PERCENT = ("value", "teacher_value", "retention", "agreement")
# The same for every seed: printed without a spread.
NO_SPREAD = ("params", "size_bytes", "teacher_value")


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """All rows as CSV: the standard keys first, then any others; lists and dicts as JSON."""
    seen = list(dict.fromkeys(k for row in rows for k in row))
    columns = [k for k in ROW_KEYS if k in seen] + [k for k in seen if k not in ROW_KEYS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return write_bytes_atomic(path, buffer.getvalue().encode())


def markdown_table(
    rows: Sequence[Mapping],
    columns: Sequence[str] = TABLE_COLUMNS,
    headers: Mapping[str, str] | None = None,
) -> str:
    """A Markdown table; aggregated fields print as `mean ± std`, fractions as percents."""
    return markdown_from_cells(*table_cells(rows, columns, headers))


def table_cells(
    rows: Sequence[Mapping], columns: Sequence[str], headers: Mapping[str, str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header names and formatted cells, shared by the Markdown and HTML renderings."""
    names = {**HEADERS, **(headers or {})}
    return ([names.get(c, c) for c in columns],
            [[format_cell(row, c) for c in columns] for row in rows])


def format_cell(row: Mapping, key: str) -> str:
    if f"{key}_mean" in row:
        mean, std = row[f"{key}_mean"], row.get(f"{key}_std")
        text = format_value(key, mean)
        if std is None or mean is None or key in NO_SPREAD:
            return text
        return f"{text} ± {format_value(key, std)}"
    return format_value(key, row.get(key))


def markdown_from_cells(head: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def text_table(head: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table of already formatted cells, for a terminal."""
    lines = [list(head), *[list(row) for row in cells]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
                     for line in lines)


def format_value(key: str, value) -> str:
    """One value as a table shows it: fractions as percents, sizes and budgets readably."""
    if not present(value):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if key in PERCENT:
        return f"{100 * value:.1f}"
    if key == "throughput_ratio":
        return f"{value:.2f}×"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key == "size_bytes":
        return f"{value / 2 ** 20:.1f} MiB"
    if key == "budget":
        return str(Fraction(value).limit_denominator(64))
    if key in ("train_seconds", "n", "layers", "seed"):
        return f"{value:.0f}"
    return f"{value:.4g}"


def _csv_value(value):
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else value
