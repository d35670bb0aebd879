"""Unlabeled training text: a file (one sentence a line, or a CSV/TSV/JSONL column) or a task."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from layergraft.errors import LayergraftError

TEXT_COLUMNS = ("text", "sentence")
TABLES = (".csv", ".tsv", ".jsonl", ".json")


def read_texts(path: str | os.PathLike, text_column: str | None = None) -> list[str]:
    """The non-empty texts of a file, in order. A .csv / .tsv / .jsonl file is read by its
    `text_column` (default: `text` or `sentence`); any other file one sentence per line."""
    path = Path(path)
    if not path.is_file():
        raise LayergraftError(f"no text file at '{path}'")
    try:
        if path.suffix.lower() in TABLES:
            texts = _column(path, text_column)
        else:
            texts = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, csv.Error, ValueError) as error:
        raise LayergraftError(f"cannot read texts from '{path}': {error}") from None
    texts = [text.strip() for text in texts if isinstance(text, str) and text.strip()]
    if not texts:
        raise LayergraftError(f"'{path}' has no usable lines of text")
    return texts


def _column(path: Path, text_column: str | None) -> list[str]:
    if path.suffix.lower() in (".jsonl", ".json"):
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        rows = [row for row in rows if isinstance(row, dict)]
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            rows = list(csv.DictReader(handle, dialect=dialect))
    columns = list(rows[0]) if rows else []
    wanted = [text_column] if text_column else list(TEXT_COLUMNS)
    found = next((name for name in wanted if name in columns), None)
    if found is None:
        raise LayergraftError(
            f"'{path}' has no text column ({' or '.join(wanted)}; it has "
            f"{', '.join(columns) or 'none'}): name one with --text-column")
    return [row.get(found) for row in rows]


def task_texts(task, splits: tuple[str, ...] = ("train",)) -> list[str]:
    """The texts of a loaded task's splits (single-sentence tasks; a pair's first text)."""
    texts = []
    for split in splits:
        if split not in task.splits:
            raise LayergraftError(f"task '{task.spec.name}' has no '{split}' split")
        texts += [text for text in task.splits[split]["text"] if text and text.strip()]
    if not texts:
        raise LayergraftError(f"task '{task.spec.name}' has no texts in {', '.join(splits)}")
    return texts
