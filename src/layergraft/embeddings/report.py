"""Embedding records as flat rows, seed means, Markdown tables and one-line headlines.

A row is one `compress(objective="embedding")` record flattened (`record_row`), or the teacher's row
(`teacher_row`: fidelity 1 by definition, its own downstream values, retention 1), so every
table shows the teacher next to the students. Downstream values are keyed
`"{task}.{measure}"` (the student's), with `.teacher` and `.retention` beside them. The same
rows feed `compare --objective embedding` and the benchmark stage's section.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from layergraft.report.tables import markdown_from_cells

TEACHER_METHOD = "teacher"
GROUP = ("method", "strategy", "layers", "budget")
MEASURE_NAMES = {"probe_accuracy": "probe acc.", "knn_accuracy": "kNN acc.",
                 "ridge_spearman": "ridge Spearman"}


def record_row(record: Mapping, budget: float = 1.0) -> dict:
    """One run's record as a row (`budget`: its share of the comparison's budget)."""
    settings = record["settings"]
    speed = record.get("speed") or {}
    heal, training = record.get("heal") or {}, record.get("training") or {}
    row = {"method": settings["method"], "strategy": settings["strategy"],
           "layers": record["layers"], "seed": settings["seed"],
           "budget": budget if settings["strategy"] == "distill" else 0.0,
           "teacher": settings["teacher"], "teacher_layers": record["teacher_layers"],
           "params": record["parameters"]["student"],
           "teacher_params": record["parameters"]["teacher"],
           "mean_cosine": record.get("mean_cosine"),
           "corpus_cosine": (record.get("neighbours") or {}).get("mean_cosine"),
           "agreement": (record.get("neighbours") or {}).get("agreement"),
           "speed_ratio": speed.get("ratio"), "ideal_ratio": speed.get("ideal_ratio"),
           "heal_steps": heal.get("steps"), "heal_seconds": heal.get("seconds"),
           "train_steps": training.get("steps"), "train_seconds": training.get("seconds")}
    for task, measures in (record.get("downstream") or {}).items():
        for measure, values in measures.items():
            row[f"{task}.{measure}"] = values["student"]
            row[f"{task}.{measure}.teacher"] = values.get("teacher")
            row[f"{task}.{measure}.retention"] = values.get("retention")
    return row


def teacher_row(record: Mapping) -> dict:
    """The teacher as a row of the same table, from any of its students' records."""
    row = {"method": TEACHER_METHOD, "strategy": "—", "layers": record["teacher_layers"],
           "seed": None, "budget": 0.0, "teacher": record["settings"]["teacher"],
           "teacher_layers": record["teacher_layers"],
           "params": record["parameters"]["teacher"],
           "teacher_params": record["parameters"]["teacher"], "mean_cosine": 1.0,
           "corpus_cosine": 1.0, "agreement": 1.0, "speed_ratio": 1.0, "ideal_ratio": 1.0}
    for task, measures in (record.get("downstream") or {}).items():
        for measure, values in measures.items():
            row[f"{task}.{measure}"] = row[f"{task}.{measure}.teacher"] = values.get("teacher")
            row[f"{task}.{measure}.retention"] = 1.0
    return row


def measures_of(rows: Sequence[Mapping]) -> list[str]:
    """The `task.measure` keys the rows hold, in first-seen order."""
    keys = dict.fromkeys(k for row in rows for k in row if k.count(".") == 1)
    return [k for k in keys if k.split(".")[1] in MEASURE_NAMES]


def seed_means(rows: Sequence[Mapping]) -> list[dict]:
    """One entry per configuration (method, strategy, layers, budget): every numeric field's
    mean as `{key}` and sample std as `{key}_std` (None for one seed), and `n` seeds."""
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in GROUP), []).append(row)
    entries = []
    for key, members in groups.items():
        entry: dict = dict(zip(GROUP, key, strict=True)) | {"n": len(members)}
        for field in dict.fromkeys(f for row in members for f in row):
            values = [row.get(field) for row in members]
            if field in (*GROUP, "seed") or not all(isinstance(v, (int, float)) for v in values):
                entry.setdefault(field, members[0].get(field))
                continue
            entry[field] = statistics.fmean(values)
            entry[f"{field}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entries.append(entry)
    return entries


def markdown(entries: Sequence[Mapping]) -> str:
    """A Markdown table of rows or `seed_means` entries (mean ± std where there is a std)."""
    measures = measures_of(entries)
    head = ["method", "strategy", "layers", "seeds", "mean cosine", "top-10 agreement %",
            *[f"{MEASURE_NAMES[m.split('.')[1]]} {m.split('.')[0]} (retention %)"
              for m in measures], "speed-up (ideal)", "params"]
    cells = []
    for e in entries:
        cells.append([str(e["method"]), str(e["strategy"]), str(e["layers"]),
                      str(e.get("n", 1)), _cell(e, "mean_cosine", 1, 4),
                      _cell(e, "agreement", 100, 1),
                      *[f"{_cell(e, m, 100, 2)} ({_cell(e, m + '.retention', 100, 1)})"
                        for m in measures],
                      f"{_cell(e, 'speed_ratio', 1, 2)}× ({_cell(e, 'ideal_ratio', 1, 2)}×)",
                      _cell(e, "params", 1e-6, 2) + "M"])
    return markdown_from_cells(head, cells)


def headline(record: Mapping) -> str:
    """One line: fidelity, each downstream value with the teacher's, the speed-up."""
    parts = []
    if record.get("mean_cosine") is not None:
        parts.append(f"mean cosine to the teacher {record['mean_cosine']:.4f}")
    if "neighbours" in record:
        neighbours = record["neighbours"]
        parts.append(f"top-{neighbours['k']} neighbour agreement "
                     f"{100 * neighbours['agreement']:.1f}% ({neighbours['corpus']} sentences)")
    for task, measures in (record.get("downstream") or {}).items():
        for measure, values in measures.items():
            text = f"{task} {MEASURE_NAMES.get(measure, measure)} {100 * values['student']:.2f}"
            if values.get("teacher") is not None:
                retention = values.get("retention")
                text += (f" (teacher {100 * values['teacher']:.2f}, retention "
                         + ("—" if retention is None else f"{100 * retention:.1f}%") + ")")
            parts.append(text)
    if record.get("speed"):
        speed = record["speed"]
        parts.append(f"{speed['ratio']:.2f}× the teacher's sentences/s (ideal "
                     f"{speed['ideal_ratio']:.2f}×)")
    return ", ".join(parts) or "nothing to report"


def _cell(entry: Mapping, key: str, scale: float, digits: int) -> str:
    value = entry.get(key)
    if not isinstance(value, (int, float)):
        return "—"
    text = f"{scale * value:.{digits}f}"
    std = entry.get(f"{key}_std")
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"
