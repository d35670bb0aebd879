"""The figure of a `--speedup` choice (results.json's `choices["speedup"]`): dev retention
against each shape's one measured speed, the Pareto front through the points, the chosen
student marked. Drawn by `figures.pareto_figure`, so it reads like every other front."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure

from layergraft.report.figures import pareto_figure


def speedup_figure(choice: Mapping) -> Figure:
    """Probed shapes (short runs), the final student (full budget) and the teacher at
    (1, 100%); the x axis is shape speed from the one timing run, so a shape has one x."""
    ratios = {row["shape"]: row["throughput_ratio"] for row in choice["shapes"]}
    chosen = choice["chosen"]
    entries = [{"method": "probe", "strategy": shape, "metric": "dev retention",
                "throughput_ratio_mean": ratios[shape], "value_mean": retention}
               for shape, retention in choice["probed"]["dev_retention"].items()]
    entries.append({"method": "final", "strategy": chosen["shape"], "metric": "dev retention",
                    "throughput_ratio_mean": chosen["throughput_ratio"],
                    "value_mean": chosen["dev_retention"], "teacher_value_mean": 1.0})
    figure = pareto_figure(entries)
    axes = figure.axes[0]
    if chosen["dev_retention"] is not None:
        axes.scatter([chosen["throughput_ratio"]], [100.0 * chosen["dev_retention"]],
                     marker="*", s=260, color="tab:orange", zorder=5,
                     label=f"chosen: {chosen['shape']}")
    axes.axvline(choice["requested"], color="grey", linestyle="--", linewidth=1,
                 label=f"asked: {choice['requested']:g}x")
    axes.set(ylabel="dev retention %", xlabel=f"throughput vs teacher on {choice['backend']} "
             f"(one run per shape, {choice['threads']} thread(s))",
             title=f"--speedup {choice['requested']:g}: retention vs shape speed")
    axes.legend(fontsize=7)
    return figure
