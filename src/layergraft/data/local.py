"""Local data files as tasks: a CSV / TSV / JSONL file, or a folder of split files.

A folder holds ``train.*``, ``dev.*`` (or ``validation.*``) and optional ``test.*``; a lone file
is split 80/10/10 with a fixed seed. Columns are found by their usual names (``text`` or
``sentence``, ``text_pair`` or ``sentence2``, ``label``) unless the user names them, and labels
are inferred: text labels are classes, whole numbers 0..K-1 are classes, other numbers are
regression.
"""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import numpy as np

from layergraft.data.tasks import LABEL, PAIR, SPLITS, TEXT, Task, TaskSpec, quiet, standardise
from layergraft.errors import LayergraftError

_READERS = {".csv": ("from_csv", {}), ".tsv": ("from_csv", {"sep": "\t"}),
            ".jsonl": ("from_json", {}), ".json": ("from_json", {})}
_DEV_NAMES = ("dev", "validation", "valid", "val")
# Column names looked for, in order, when the user names none; and the flag that names one.
_CANDIDATES = {TEXT: ("text", "sentence", "sentence1"), PAIR: ("text_pair", "sentence2"),
               LABEL: ("label",)}
_FLAGS = {TEXT: "--text-column", PAIR: "--pair-column", LABEL: "--label-column"}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def _read_file(path: Path) -> datasets.Dataset:
    if path.suffix.lower() not in _READERS:
        raise LayergraftError(
            f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv or .jsonl"
        )
    _check_text_rows(path)
    reader, kwargs = _READERS[path.suffix.lower()]
    try:
        return getattr(datasets.Dataset, reader)(str(path), **kwargs)
    except Exception as error:  # pandas / pyarrow / datasets each raise their own types
        detail = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise LayergraftError(f"cannot read {path}: {detail}") from None


def _check_text_rows(path: Path) -> None:
    """Refuse, in one line, a file that is not UTF-8 text or holds no example: the readers
    would say only that generating the dataset failed, or that "train" has no data."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        head = b"\0"
    if b"\0" in head:
        raise LayergraftError(f"{path} is not UTF-8 text (binary data or another encoding): "
                              "give a UTF-8 CSV, TSV or JSONL file of examples")
    header = 0 if path.suffix.lower() in (".jsonl", ".json") else 1
    lines = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            lines += bool(line.strip())
            if lines > header:
                return
    if lines == 0:
        raise LayergraftError(f"{path} is empty: give a header line (text,label) and one "
                              "example a line" if header else f"{path} is empty: give one "
                              'JSON object a line, such as {"text": ..., "label": ...}')
    raise LayergraftError(f"{path} has a header but no rows: add one example a line below it")


def _folder_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _READERS:
            continue
        stem = path.stem.lower()
        split = "dev" if stem in _DEV_NAMES else stem
        if split in found:
            raise LayergraftError(f"{folder} holds two {split} files: {found[split].name}, "
                                  f"{path.name}; keep one")
        if split in SPLITS:
            found[split] = path
    if "train" not in found or "dev" not in found:
        names = ", ".join(p.name for p in sorted(folder.iterdir())) or "nothing"
        raise LayergraftError(
            f"{folder} needs train.* and dev.* (or validation.*) files (.csv, .tsv, .jsonl), "
            f"optionally test.*; it holds {names}"
        )
    return found


def _split_one_file(path: Path, data: datasets.Dataset, seed: int) -> tuple[dict, str]:
    """80/10/10 split of a lone file, fixed by ``seed`` and the file's row order."""
    if len(data) < 10:
        raise LayergraftError(f"{path} has {len(data)} rows: too few to split into "
                              "train/dev/test; give at least 10, or a folder of split files")
    held_out = SPLIT_FRACTIONS[1] + SPLIT_FRACTIONS[2]
    parts = data.train_test_split(test_size=held_out, seed=seed)
    rest = parts["test"].train_test_split(test_size=SPLIT_FRACTIONS[2] / held_out, seed=seed)
    notice = (f"{path.name} has no dev/test files: its {len(data)} rows were split "
              f"80/10/10 into train/dev/test with seed {seed}")
    return {"train": parts["train"], "dev": rest["train"], "test": rest["test"]}, notice


def _pick_column(found: Sequence[str], role: str, given: str | None, where: str) -> str | None:
    if given is not None:
        if given not in found:
            raise LayergraftError(f"{where} has no column '{given}' (columns: "
                                  f"{', '.join(found)}); fix {_FLAGS[role]}")
        return given
    return next((c for c in _CANDIDATES[role] if c in found), None)


def _resolve_columns(raw: Mapping[str, datasets.Dataset], columns: Mapping[str, str | None],
                     where: str) -> dict[str, str | None]:
    found = raw["train"].column_names
    picked = {role: _pick_column(found, role, given, where) for role, given in columns.items()}
    for role in (TEXT, LABEL):
        if picked[role] is None:
            raise LayergraftError(
                f"{where} has no {role} column ({' or '.join(_CANDIDATES[role])}); columns: "
                f"{', '.join(found)}; name it with {_FLAGS[role]}"
            )
    for split, data in raw.items():
        needed = [c for role, c in picked.items() if c and (role != LABEL or split != "test")]
        missing = [c for c in needed if c not in data.column_names]
        if missing:
            raise LayergraftError(f"{where}: the {split} split lacks column(s) "
                                  f"{', '.join(missing)} (it has {', '.join(data.column_names)})")
        empty = sum(Counter(data[c])[None] for c in needed if c != picked[LABEL])
        if empty:
            raise LayergraftError(f"{where}: {empty} {split} rows have an empty text; "
                                  "fill or drop them")
    return picked


def _infer_labels(values: list, regression: bool | None, where: str) -> tuple[int, tuple]:
    """``(num_labels, label_names)``: text labels are classes (sorted names); numbers are
    regression when some are not whole (or when asked), else classes 0..max."""
    if any(v is None for v in values):
        raise LayergraftError(f"{where}: {values.count(None)} rows have no label; fill or drop "
                              "them (a test file may omit the label column entirely)")
    if all(isinstance(v, str) for v in values):
        if regression:
            raise LayergraftError(f"{where}: labels are text ('{values[0]}'), so the task "
                                  "cannot be regression; drop --regression")
        return len(set(values)), tuple(sorted(set(values)))
    numbers = np.asarray(values, dtype=np.float64)
    whole = bool(np.all(numbers == np.round(numbers)))
    if regression or (regression is None and not whole):
        return 1, ()
    if not whole:
        example = next(v for v in numbers if v != round(v))
        raise LayergraftError(f"{where}: labels like {example} are not whole numbers, so they "
                              "cannot be classes; use regression or map them to 0..K-1")
    if numbers.min() < 0 or numbers.max() < 1:
        raise LayergraftError(f"{where}: class labels must be 0..K-1 with at least two classes "
                              f"(found {numbers.min():g}..{numbers.max():g}); remap them")
    return int(numbers.max()) + 1, ()


def load_local(path: Path, columns: Mapping[str, str | None], regression: bool | None,
                seed: int) -> Task:
    with quiet():
        return _read_local(path, columns, regression, seed)


def _read_local(path: Path, columns: Mapping[str, str | None], regression: bool | None,
                seed: int) -> Task:
    notice = None
    if path.is_dir():
        raw = {split: _read_file(file) for split, file in _folder_files(path).items()}
    else:
        raw, notice = _split_one_file(path, _read_file(path), seed)
    where = str(path)
    picked = _resolve_columns(raw, columns, where)
    label = picked[LABEL]
    labeled = {s: d for s, d in raw.items() if label in d.column_names}
    values = [v for data in labeled.values() for v in data[label]]
    num_labels, label_names = _infer_labels(values, regression, where)
    spec = TaskSpec(
        name=path.stem, num_labels=num_labels, source="file", dataset=str(path),
        metrics=("pearson", "spearman") if num_labels == 1 else ("accuracy", "macro_f1"),
        text_column=picked[TEXT], pair_column=picked[PAIR], label_column=label,
        label_names=label_names,
    )
    if label_names:
        classes = datasets.ClassLabel(names=list(label_names))
        raw = {s: d.cast_column(label, classes) if s in labeled else d for s, d in raw.items()}
    splits = datasets.DatasetDict({s: standardise(raw[s], spec) for s in SPLITS if s in raw})
    return Task(spec, splits, notice)
