"""BENCHMARKS.md's width section (issue 35) from benchmarks/results/width.json alone: per CPU
the Pareto front of measured speed against test retention over every shape and backend, and
every target of the issue marked MET or MISSED. Renders partial rows; none: "No runs yet"."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib.stages import TASKS
from lib.width_plan import GRIDS, TASK

from layergraft.report.stats import pareto_front, summary_table
from layergraft.report.tables import markdown_from_cells

TITLE = "## Width and depth: the fastest student (issue 35)"
# (retention, speed-up over the MiniLM teacher's torch-fp32), by whether the CPU has int8 units
TARGETS = {True: ((0.97, 10.0), (0.98, 6.0)), False: ((0.97, 4.5),)}
PAYING_POINTS = 2  # speed points at which depth + width must beat depth alone
METRIC = TASKS[TASK]  # the task's primary metric (each run also has a macro-F1 row)
SEEDS = 3  # a chosen point's seeds before a target counts as met (the issue: 3 seeds)


def retention_by_shape(rows: Sequence[Mapping], model: str) -> dict[str, Mapping]:
    """Test retention over seeds per shape: mean, std (None for one seed) and n."""
    runs = [r for r in rows if r.get("kind") == "run" and r.get("model") == model
            and r.get("split") == "test" and r.get("metric", METRIC) == METRIC]
    return {e["shape"]: {"mean": e["retention_mean"],
                         "std": e["retention_std"] if e["n"] >= 2 else None, "n": e["n"]}
            for e in summary_table(runs, group_by=("shape",), fields=("retention",))}


def cpu_points(rows: Sequence[Mapping], model: str) -> dict[str, list[dict]]:
    """Per CPU, one point per (backend, shape) that has both a speed and a retention."""
    kept = retention_by_shape(rows, model)
    points: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("kind") == "speed" and row.get("model") == model and row["shape"] in kept:
            points.setdefault(row["cpu"], []).append({**row, "retention": kept[row["shape"]]})
    return points


def front(points: Sequence[Mapping]) -> list[Mapping]:
    """The points no other beats on both speed and mean retention, slowest first."""
    return [points[i] for i in pareto_front([(p["throughput_ratio"], p["retention"]["mean"])
                                             for p in points])]


def speed_targets(points: Sequence[Mapping]) -> list[tuple[str, str]]:
    """This CPU's retention-at-speed targets, each MET (a point meets it over SEEDS seeds),
    PENDING (a point meets it on fewer seeds so far) or MISSED."""
    units = bool(points and points[0].get("int8_units"))
    kind = "VNNI/AMX" if units else "AVX2 only"
    marks = []
    for r, x in TARGETS[units]:
        meeting = [p for p in points
                   if p["retention"]["mean"] >= r and p["throughput_ratio"] >= x]
        status = ("MET" if any(p["retention"]["n"] >= SEEDS for p in meeting)
                  else f"PENDING (fewer than {SEEDS} seeds)" if meeting else "MISSED")
        marks.append((f"{kind}: >= {100 * r:.0f}% retention at >= {x:g}x the teacher's "
                      "torch-fp32", status))
    return marks


def width_pays(points: Sequence[Mapping], model: str) -> tuple[str, str]:
    """Whether, at equal measured speed (as fast or faster, same backend), a narrowed shape
    beats a shallower full-width one by more than the larger seed std, at two speed points
    (two full-width shapes) of one backend; a pair without seeds on both sides cannot count:
    PENDING while there are too few."""
    full = GRIDS[model][1][0]
    paying: dict[str, dict[str, str]] = {}  # backend -> slow shape -> the pair, in words
    unseeded: dict[str, set[str]] = {}
    for slow in (p for p in points if p["ffn_size"] == full):
        for fast in points:
            if (fast["ffn_size"] < full and fast["backend"] == slow["backend"]
                    and fast["throughput_ratio"] >= slow["throughput_ratio"]):
                spread = [fast["retention"]["std"], slow["retention"]["std"]]
                gain = fast["retention"]["mean"] - slow["retention"]["mean"]
                if None in spread:
                    if gain > 0:
                        unseeded.setdefault(slow["backend"], set()).add(slow["shape"])
                elif gain > max(spread):
                    paying.setdefault(slow["backend"], {}).setdefault(
                        slow["shape"], f"{fast['shape']} over {slow['shape']} "
                        f"+{100 * gain:.1f} pts (std {100 * max(spread):.1f})")
    best = max(paying, key=lambda b: len(paying[b]), default=None)
    found = paying.get(best, {})
    ahead = max((len(paying.get(b, {}).keys() | unseeded.get(b, set()))
                 for b in paying.keys() | unseeded.keys()), default=0)
    status = ("MET" if len(found) >= PAYING_POINTS else "PENDING (seeds)"
              if ahead >= PAYING_POINTS else "MISSED")
    pairs = f"{best}: {'; '.join(found.values())}" if found else "none yet"
    return (f"width that pays: depth + width above depth alone by more than the seed std at "
            f">= {PAYING_POINTS} speed points of one backend ({pairs})", status)


def section(path: Path, model: str = "minilm") -> str:
    """The Markdown section from the rows at `path`."""
    rows = json.loads(path.read_text()) if path.is_file() else []
    by_cpu = cpu_points(rows, model)
    if not by_cpu:
        return f"{TITLE}\n\nNo runs yet.\n"
    parts = [TITLE, "Each shape timed once per CPU and backend in one interleaved run with the "
                    "teacher (torch-fp32 reference, batch 32, dev lengths, 1 thread); "
                    "retention on test, mean ± std over seeds, of the trained student in "
                    "torch fp32 (its int8 graph is not scored here: the deployment section "
                    "measures what int8 costs each student)."]
    for cpu, points in by_cpu.items():
        cells = [[p["backend"], p["shape"], f"{p['throughput_ratio']:.2f}x",
                  _retention(p["retention"])] for p in front(points)]
        marks = [*speed_targets(points), width_pays(points, model)]
        parts += [f"### {cpu} ({points[0].get('cpu_capability', '?')})",
                  markdown_from_cells(["backend", "shape", "speed-up", "retention %"], cells),
                  "\n".join(f"- {status}: {text}" for text, status in marks)]
    return "\n\n".join(parts) + "\n"


def _retention(value: Mapping) -> str:
    text = f"{100 * value['mean']:.1f}"
    return text if value["std"] is None else f"{text} ± {100 * value['std']:.1f}"
