"""What `bench --out` writes: bench.json, bench.csv, pareto.png and bench.md, from the records.

The headline case is the largest batch at real lengths (batch 32 by default): the Pareto plot
puts each (model, backend) there, throughput (log scale) against retention, and the best
backend of a model is the fastest one there whose task metric is within `MAX_DROP` (1 point)
of that model's own torch-fp32 metric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from layergraft.report.figures import blank_figure, png_bytes
from layergraft.report.stats import pareto_front
from layergraft.report.tables import markdown_from_cells, write_csv
from layergraft.utils import write_bytes_atomic, write_json_atomic

MAX_DROP = 0.01
REFERENCE_BACKEND = "torch-fp32"
RULE = (f"best backend = the fastest at the largest batch on real lengths among those whose "
        f"metric is within {100 * MAX_DROP:g} point of the same model's {REFERENCE_BACKEND}")
FILES = ("bench.json", "bench.csv", "pareto.png", "bench.md")


def headline(rows: Sequence[Mapping]) -> list[Mapping]:
    """The records of the headline case (largest batch, real lengths) that ran."""
    real = [r for r in rows if r.get("lengths", "real") == "real" and "skipped" not in r]
    batch = max((r["batch_size"] for r in real), default=None)
    return [r for r in real if r["batch_size"] == batch]


def best_backends(rows: Sequence[Mapping]) -> dict[str, Mapping | None]:
    """Per model, its best backend's headline record (None: no scored torch-fp32 record)."""
    case = headline(rows)
    best: dict[str, Mapping | None] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        own = [r for r in case if r["model"] == model and r.get("value") is not None]
        reference = next((r for r in own if r.get("backend") == REFERENCE_BACKEND), None)
        fine = [r for r in own if reference is not None
                and r["value"] >= reference["value"] - MAX_DROP - 1e-12]
        best[model] = max(fine, key=lambda r: r["throughput"]) if fine else None
    return best


def best_lines(rows: Sequence[Mapping]) -> list[str]:
    """One sentence per model naming its best backend (or why there is none)."""
    lines = []
    for model, record in best_backends(rows).items():
        if record is None:
            lines.append(f"- {model}: none (needs a scored {REFERENCE_BACKEND} record)")
            continue
        lines.append(f"- {model}: **{record['backend']}**, {record['throughput']:.1f} "
                     f"examples/s ({record['throughput_ratio']:.2f}x the reference), "
                     f"{record['metric']} {100 * record['value']:.2f}")
    return lines


def pareto_png(rows: Sequence[Mapping]) -> bytes:
    """Retention against headline throughput, one labelled point per (model, backend)."""
    points = [r for r in headline(rows) if r.get("retention") is not None]
    figure, axes = blank_figure()
    xy = [(r["throughput"], 100 * r["retention"]) for r in points]
    axes.scatter([x for x, _ in xy], [y for _, y in xy], color="tab:blue")
    for (x, y), r in zip(xy, points, strict=True):
        axes.annotate(f"{Path(str(r['model'])).name} {r['backend']}", (x, y), fontsize=6,
                      xytext=(3, 3), textcoords="offset points")
    front = pareto_front(xy)
    axes.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color="tab:red",
              drawstyle="steps-pre", label="Pareto front")
    batch = points[0]["batch_size"] if points else "?"
    metric = points[0]["metric"] if points else "metric"
    axes.set_xscale("log")
    axes.set(xlabel=f"throughput at batch {batch}, real lengths (examples/s, log)",
             ylabel=f"{metric} retention % (vs the first model, first backend)",
             title="speed vs quality per model and backend")
    axes.legend(fontsize=7)
    return png_bytes(figure)


def markdown(rows: Sequence[Mapping], figure: str = "pareto.png") -> str:
    """bench.md: the records as a table, the best backend per model (and the rule), the plot."""
    head = ["model", "backend", "tokens", "batch", "examples/s", "ms/batch", "speed-up",
            "on disk (MB)", "metric", "retention %"]
    cells = []
    for r in rows:
        where = [str(r["model"]), str(r.get("backend", "torch")), str(r.get("lengths", "real")),
                 str(r["batch_size"])]
        if "skipped" in r:
            cells.append([*where, f"skipped: {r['skipped']}", *[""] * 5])
            continue
        value, retention = r.get("value"), r.get("retention")
        cells.append([*where, f"{r['throughput']:.1f}", f"{r['latency_ms']:.2f}",
                      f"{r['throughput_ratio']:.2f}x",
                      f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "—",
                      "—" if value is None else f"{r['metric']} {100 * value:.2f}",
                      "—" if retention is None or math.isnan(retention)
                      else f"{100 * retention:.1f}"])
    return "\n\n".join(["# layergraft bench", markdown_from_cells(head, cells),
                        f"## Best backend per model\n\n{RULE}.\n\n"
                        + "\n".join(best_lines(rows)),
                        f"![speed vs quality]({figure})"]) + "\n"


def write_outputs(rows: Sequence[Mapping], out: str | os.PathLike) -> list[Path]:
    """The four files in `out`, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "bench.json", list(rows))
    write_csv(rows, out / "bench.csv")
    write_bytes_atomic(out / "pareto.png", pareto_png(rows))
    write_bytes_atomic(out / "bench.md", markdown(rows).encode())
    return [out / name for name in FILES]
