"""BENCHMARKS.md's section for issue 32's lever grid at 12 -> 6 (`suites/mpnet_levers.py`):
every lever beside the strongest baseline, and retention against the learning rate for graft
and drop-top. Reads benchmarks/results/mpnet_levers.json only; never trains."""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib.jsonstore import read_rows

from layergraft.report.figures import blank_figure, png_bytes
from layergraft.report.tables import markdown_from_cells
from layergraft.utils import write_bytes_atomic

METRIC = "accuracy"
LR_CURVE = re.compile(r"^(graft|drop-top), lr ([0-9.e-]+)$")  # the rate-only cells
FIGURE = "mpnet_levers_lr.png"


def section(path: Path, figures: Path, link: str) -> list[str]:
    rows = [r for r in read_rows(path) if r["metric"] == METRIC]
    parts = ["### Levers at 12 -> 6, 1/4 budget (issue 32; dev chooses, test reported)",
             _intro()]
    if not rows:
        return parts + ["No cells yet: `python benchmarks/mpnet_levers.py`."]
    # one table per teacher (a teacher fine-tuned again on another CPU is another model),
    # the one with the most cells first; the figure is drawn from that one
    by_teacher: dict[str, list[Mapping]] = {}
    for row in rows:
        by_teacher.setdefault(row["teacher_content"], []).append(row)
    ordered = sorted(by_teacher.values(), key=len, reverse=True)
    for own in ordered:
        parts += [_caption(own), _table(own)]
    return parts + _figure(ordered[0], figures, link)


def _caption(rows: Sequence[Mapping]) -> str:
    """Which teacher a table's cells were measured against, and where."""
    scores = {r["split"]: r["teacher_value"] for r in rows if "teacher_value" in r}
    cpus = sorted({r.get("cpu", "not recorded") for r in rows})
    score = " / ".join(f"{split} {100 * scores[split]:.2f}" for split in ("dev", "test")
                       if split in scores)
    cells = len({(r["variant"], r["seed"]) for r in rows})
    return (f"Teacher content {rows[0]['teacher_content']}"
            f"{f' (accuracy {score})' if score else ''}; {cells} cell{'s' * (cells != 1)}, "
            f"run on {'; '.join(cpus)}.")


def _intro() -> str:
    return ("Every cell is one `compress` run of the 12-layer stage's teacher at 1/4 of its "
            "full budget (a quarter epoch: 67 distillation steps of batch 32), fp32, one thread, "
            "length-grouped batches, the collapse guard off; `python "
            "benchmarks/mpnet_levers.py` (resumable, one process per core; `--dry-run`). "
            "Retention is the student's accuracy over the teacher's on the same split; "
            "agreement is on test. A plan `intact 0-K` keeps the bottom layers 0..K and "
            "grafts the layers above into the remaining ones (e.g. intact 0-3: "
            "0,1,2,3,4-7,8-11).")


def _table(rows: Sequence[Mapping]) -> str:
    cells = []
    best = _best_baseline(rows)
    for variant in dict.fromkeys(r["variant"] for r in rows):
        dev = [r["retention"] for r in rows if r["variant"] == variant and r["split"] == "dev"]
        test = [r for r in rows if r["variant"] == variant and r["split"] == "test"]
        name = f"**{variant}** (strongest baseline on dev)" if variant == best else variant
        cells.append([name, str(len(dev)), _mean(dev), _mean([r["retention"] for r in test]),
                      _mean([r["agreement"] for r in test]),
                      f"{statistics.mean(r['train_seconds'] for r in test):.0f}",
                      str(sum(r.get("restarts", 0) for r in test))])
    return markdown_from_cells(["cell", "seeds", "dev retention %", "test retention %",
                                "test agreement %", "train s", "restarts"], cells)


def _best_baseline(rows: Sequence[Mapping]) -> str | None:
    dev = {}
    for r in rows:
        if r["split"] == "dev" and not r["variant"].startswith("graft"):
            dev.setdefault(r["variant"], []).append(r["retention"])
    return max(dev, key=lambda v: statistics.mean(dev[v])) if dev else None


def _mean(values: Sequence[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _figure(rows: Sequence[Mapping], figures: Path, link: str) -> list[str]:
    curves: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in rows:
        match = LR_CURVE.match(r["variant"])
        if match:
            curve = curves.setdefault((match[1], r["split"]), {})
            curve.setdefault(float(match[2]), []).append(100 * r["retention"])
    if not curves:
        return []
    figure, axes = blank_figure()
    for (method, split), points in sorted(curves.items()):
        rates = sorted(points)
        axes.plot(rates, [statistics.mean(points[x]) for x in rates], marker="o",
                  linestyle="-" if split == "dev" else "--", label=f"{method}, {split}")
    axes.set_xscale("log")
    axes.set_xlabel("peak learning rate")
    axes.set_ylabel("retention of the teacher's accuracy (%)")
    axes.set_title("all-mpnet-base-v2, 12 -> 6, 1/4 budget")
    axes.legend()
    write_bytes_atomic(figures / FIGURE, png_bytes(figure))
    return [f"![retention against learning rate]({link}/{FIGURE})"]
