"""Figures of summarised rows: retention vs depth, vs training budget, and metric vs speed-up.

Built with matplotlib's object API on the Agg canvas (no screen, no pyplot state).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from layergraft.data.metrics import METRICS
from layergraft.report.stats import budget_of, final_budget, group_lines, pareto_front, present
from layergraft.report.tables import HEADERS, format_value


def depth_figure(summary: Sequence[Mapping], y: str = "retention") -> Figure:
    """`y` (mean ± std over seeds) against depth, one line per method / strategy."""
    figure, axes = blank_figure()
    for label, entries in group_lines(final_budget(summary), ("method", "strategy")).items():
        entries = sorted(entries, key=lambda e: e["layers"])
        axes.errorbar([e["layers"] for e in entries], [_pct(e[f"{y}_mean"]) for e in entries],
                      yerr=[_pct(e[f"{y}_std"] or 0.0) for e in entries], marker="o",
                      capsize=3, label=label)
    if y == "retention":
        axes.axhline(100.0, color="grey", linestyle=":", linewidth=1, label="teacher")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set(xlabel="layers", ylabel=f"{HEADERS.get(y, y)}", title=f"{y} vs depth")
    axes.legend(fontsize=7)
    return figure


def budget_figure(summary: Sequence[Mapping], methods: Sequence[str] | None = None) -> Figure:
    """Retention against the fraction of the full training budget, per method and depth.

    A curve without a budget-0 point starts from its method's surgery-only (`none`) row.
    """
    figure, axes = blank_figure()
    start = {(e["method"], e["layers"]): e for e in summary
             if e.get("strategy") == "none" and budget_of(e) == 0}
    for label, entries in group_lines(summary, ("method", "strategy", "layers")).items():
        first = entries[0]
        if first["strategy"] == "none" or (methods is not None and first["method"] not in methods):
            continue
        origin = start.get((first["method"], first["layers"]))
        if origin is not None and min(map(budget_of, entries)) > 0:
            entries = [origin, *entries]
        if len(entries) < 2:
            continue
        entries = sorted(entries, key=budget_of)
        axes.errorbar([e["budget"] for e in entries], [_pct(e["retention_mean"]) for e in entries],
                      yerr=[_pct(e["retention_std"] or 0.0) for e in entries], marker="o",
                      capsize=3, label=f"{label}L")
    axes.set_xscale("symlog", linthresh=0.125)
    budgets = sorted({e["budget"] for e in summary if present(e.get("budget"))})
    axes.set_xticks(budgets, [format_value("budget", b) for b in budgets])
    axes.set(xlabel="training budget (fraction of full)", ylabel="retention %",
             title="retention vs training budget")
    axes.legend(fontsize=7)
    return figure


def pareto_figure(summary: Sequence[Mapping], xlabel: str | None = None) -> Figure:
    """Metric against measured speed-up, one colour per method / strategy, the front in red.

    The teacher is the point (1, its metric); `xlabel` names where the speed comes from.
    """
    entries = [e for e in final_budget(summary)
               if present(e.get("throughput_ratio_mean")) and present(e.get("value_mean"))]
    points = [(e["throughput_ratio_mean"], e["value_mean"]) for e in entries]
    teacher = next((e["teacher_value_mean"] for e in summary
                    if present(e.get("teacher_value_mean"))), None)
    figure, axes = blank_figure()
    if teacher is not None:
        points.append((1.0, teacher))
        axes.scatter([1.0], [_pct(teacher)], marker="*", s=120, color="black", label="teacher")
    for label, group in group_lines(entries, ("method", "strategy")).items():
        axes.scatter([e["throughput_ratio_mean"] for e in group],
                     [_pct(e["value_mean"]) for e in group], label=label)
    sign = 1.0 if _higher_is_better(summary) else -1.0
    front = pareto_front([(x, sign * y) for x, y in points])
    axes.plot([points[i][0] for i in front], [_pct(points[i][1]) for i in front],
              color="tab:red", marker="o", fillstyle="none", markersize=11,
              label="Pareto front", drawstyle="steps-pre" if sign > 0 else "default")
    metric = summary[0].get("metric", "value") if summary else "value"
    axes.set(xlabel=xlabel or "throughput vs teacher (measured in one run)",
             ylabel=f"{metric} ×100",
             title=f"{metric} vs speed-up (full budget)")
    axes.legend(fontsize=7)
    return figure


def blank_figure() -> tuple[Figure, object]:
    """A 6 x 4 inch figure on the Agg canvas and its one axes."""
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _pct(value: float | None) -> float:
    return 100.0 * value if present(value) else math.nan


def _higher_is_better(summary: Sequence[Mapping]) -> bool:
    metric = METRICS.get(str(summary[0].get("metric"))) if summary else None
    return metric.higher_is_better if metric is not None else True
