"""Records -> CSV, summary tables, plots and a Markdown / self-contained HTML report.

Nothing here trains, evaluates or times a model: every number comes from the rows it is
given (long format, one row per run x split x metric, with at least the keys of
`ROW_KEYS`), so a report can be regenerated from saved results at any time. The paired
tests (`mcnemar`, `paired_bootstrap`) are pure functions over saved per-example
predictions; their outputs are records too, which `write_report` renders.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import mimetypes
import os
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from layergraft.metrics import METRICS
from layergraft.utils import write_bytes_atomic

ROW_KEYS = ("task", "method", "strategy", "layers", "budget", "seed", "split", "metric",
            "value", "teacher_value", "retention", "agreement", "throughput_ratio", "params",
            "train_seconds")
GROUP_KEYS = ("task", "split", "metric", "method", "strategy", "layers", "budget")
STAT_FIELDS = ("value", "teacher_value", "retention", "agreement", "throughput_ratio",
               "params", "size_bytes", "train_seconds")
SORT_PRIORITY = ("task", "split", "metric", "layers", "method", "strategy", "budget")
# One trained configuration; its rows at different budgets form a budget curve.
RUN_KEYS = ("task", "split", "metric", "method", "strategy", "layers")
TABLE_COLUMNS = ("method", "strategy", "layers", "budget", "n", "value", "retention",
                 "agreement", "throughput_ratio", "params", "size_bytes", "train_seconds")
HEADERS = {"n": "seeds", "retention": "retention %", "agreement": "agreement %",
           "throughput_ratio": "speed-up", "size_bytes": "on disk", "train_seconds": "train s"}
PERCENT = ("value", "teacher_value", "retention", "agreement")
# The same for every seed: printed without a spread.
NO_SPREAD = ("params", "size_bytes", "teacher_value")

# ("h1" | "h2" | "p", text) | ("table", headers, cells) | ("image", caption, file name, bytes)
Block = tuple


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


def summary_table(
    rows: Sequence[Mapping],
    *,
    split: str | None = None,
    metric: str | None = None,
    group_by: Sequence[str] = GROUP_KEYS,
    fields: Sequence[str] = STAT_FIELDS,
) -> list[dict]:
    """Rows aggregated over seeds: `n`, `seeds`, and `<field>_mean` / `<field>_std` per field.

    The std is the sample std (ddof=1), None for a single seed; missing values are left
    out of their field only. Groups come ordered by first appearance, deepest first.
    """
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        if (split is None or row.get("split") == split) and (
                metric is None or row.get("metric") == metric):
            groups.setdefault(tuple(row.get(k) for k in group_by), []).append(row)
    summary = []
    for key, members in groups.items():
        entry = dict(zip(group_by, key, strict=True))
        entry["n"] = len(members)
        entry["seeds"] = sorted({m["seed"] for m in members if m.get("seed") is not None})
        for field in fields:
            values = [float(m[field]) for m in members if _present(m.get(field))]
            entry[f"{field}_mean"] = float(np.mean(values)) if values else None
            entry[f"{field}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        summary.append(entry)
    return sorted(summary, key=_order_key(summary, group_by))


def final_budget(summary: Sequence[Mapping]) -> list[Mapping]:
    """Each configuration at the largest training budget it has (surgery-only rows stay)."""
    best: dict[tuple, Mapping] = {}
    for entry in summary:
        key = tuple(entry.get(k) for k in RUN_KEYS)
        if key not in best or _budget(entry) > _budget(best[key]):
            best[key] = entry
    return [e for e in summary if best[tuple(e.get(k) for k in RUN_KEYS)] is e]


def markdown_table(
    rows: Sequence[Mapping],
    columns: Sequence[str] = TABLE_COLUMNS,
    headers: Mapping[str, str] | None = None,
) -> str:
    """A Markdown table; aggregated fields print as `mean ± std`, fractions as percents."""
    return _markdown_table(*table_cells(rows, columns, headers))


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
        text = _format(key, mean)
        if std is None or mean is None or key in NO_SPREAD:
            return text
        return f"{text} ± {_format(key, std)}"
    return _format(key, row.get(key))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better), by x."""
    valid = [i for i, p in enumerate(points) if all(_present(v) for v in p)]
    front = [i for i in valid if not any(
        points[j][0] >= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i]
        for j in valid)]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def depth_figure(summary: Sequence[Mapping], y: str = "retention") -> Figure:
    """`y` (mean ± std over seeds) against depth, one line per method / strategy."""
    figure, axes = _figure()
    for label, entries in _lines(final_budget(summary), ("method", "strategy")).items():
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
    figure, axes = _figure()
    start = {(e["method"], e["layers"]): e for e in summary
             if e.get("strategy") == "none" and _budget(e) == 0}
    for label, entries in _lines(summary, ("method", "strategy", "layers")).items():
        first = entries[0]
        if first["strategy"] == "none" or (methods is not None and first["method"] not in methods):
            continue
        origin = start.get((first["method"], first["layers"]))
        if origin is not None and min(map(_budget, entries)) > 0:
            entries = [origin, *entries]
        if len(entries) < 2:
            continue
        entries = sorted(entries, key=_budget)
        axes.errorbar([e["budget"] for e in entries], [_pct(e["retention_mean"]) for e in entries],
                      yerr=[_pct(e["retention_std"] or 0.0) for e in entries], marker="o",
                      capsize=3, label=f"{label}L")
    axes.set_xscale("symlog", linthresh=0.125)
    budgets = sorted({e["budget"] for e in summary if _present(e.get("budget"))})
    axes.set_xticks(budgets, [_format("budget", b) for b in budgets])
    axes.set(xlabel="training budget (fraction of full)", ylabel="retention %",
             title="retention vs training budget")
    axes.legend(fontsize=7)
    return figure


def pareto_figure(summary: Sequence[Mapping]) -> Figure:
    """Metric against measured speed-up, one colour per method / strategy, the front in red.

    The teacher is the point (1, its metric).
    """
    entries = [e for e in final_budget(summary)
               if _present(e.get("throughput_ratio_mean")) and _present(e.get("value_mean"))]
    points = [(e["throughput_ratio_mean"], e["value_mean"]) for e in entries]
    teacher = next((e["teacher_value_mean"] for e in summary
                    if _present(e.get("teacher_value_mean"))), None)
    figure, axes = _figure()
    if teacher is not None:
        points.append((1.0, teacher))
        axes.scatter([1.0], [_pct(teacher)], marker="*", s=120, color="black", label="teacher")
    for label, group in _lines(entries, ("method", "strategy")).items():
        axes.scatter([e["throughput_ratio_mean"] for e in group],
                     [_pct(e["value_mean"]) for e in group], label=label)
    sign = 1.0 if _higher_is_better(summary) else -1.0
    front = pareto_front([(x, sign * y) for x, y in points])
    axes.plot([points[i][0] for i in front], [_pct(points[i][1]) for i in front],
              color="tab:red", marker="o", fillstyle="none", markersize=11,
              label="Pareto front", drawstyle="steps-pre" if sign > 0 else "default")
    metric = summary[0].get("metric", "value") if summary else "value"
    axes.set(xlabel="throughput vs teacher (measured in one run)", ylabel=f"{metric} ×100",
             title=f"{metric} vs speed-up (full budget)")
    axes.legend(fontsize=7)
    return figure


def mcnemar(pred_a: Sequence, pred_b: Sequence, labels: Sequence) -> dict:
    """Exact McNemar test of two classifiers on the same examples (binomial on discordant pairs).

    `only_a` counts examples A gets right and B wrong; the two-sided p-value is that of
    `only_a` successes in `only_a + only_b` fair coin flips (1.0 when they never differ).
    """
    right_a, right_b = _correct(pred_a, labels), _correct(pred_b, labels)
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    discordant = only_a + only_b
    p_value = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return {"n": int(right_a.size), "a_correct": int(right_a.sum()),
            "b_correct": int(right_b.sum()), "only_a": only_a, "only_b": only_b,
            "p_value": float(p_value)}


def paired_bootstrap(
    pred_a: Sequence,
    pred_b: Sequence,
    labels: Sequence,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Metric(A) - metric(B) with a percentile bootstrap CI over resampled examples.

    Predictions are what the metric consumes (class ids, or scores for regression).
    `p_value` is the two-sided share of resamples on the other side of zero, add-one
    smoothed so it is never reported as exactly 0.
    """
    fn = METRICS[metric].fn if isinstance(metric, str) else metric
    a, b, y = (np.asarray(v) for v in (pred_a, pred_b, labels))
    if not a.shape == b.shape == y.shape:
        raise ValueError(f"predictions and labels differ in shape: {a.shape}, {b.shape}, {y.shape}")

    def delta(a_, b_, y_):
        return fn(a_, y_) - fn(b_, y_)

    result = stats.bootstrap((a, b, y), delta, paired=True, vectorized=False,
                             n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    draws = result.bootstrap_distribution
    tail = min(np.sum(draws <= 0), np.sum(draws >= 0))
    return {"n": int(y.size), "metric": getattr(fn, "__name__", str(metric)),
            "a": float(fn(a, y)), "b": float(fn(b, y)), "delta": float(delta(a, b, y)),
            "ci_low": float(result.confidence_interval.low),
            "ci_high": float(result.confidence_interval.high),
            "p_value": float(min(1.0, 2 * (tail + 1) / (n_resamples + 1)))}


def write_report(
    rows: Sequence[Mapping],
    out_dir: str | os.PathLike,
    title: str,
    extra_images: Mapping[str, str | os.PathLike] | None = None,
    *,
    split: str = "test",
    comparisons: Sequence[Mapping] = (),
    budget_methods: Sequence[str] | None = None,
    intro: str = "",
) -> tuple[Path, Path]:
    """Write report.md (PNGs beside it) and report.html (images inlined) into `out_dir`.

    Per task: the summary on `split` for its first-listed metric at each configuration's
    full budget, the depth / budget / Pareto plots the rows allow, and agreement with the
    teacher on every split; then the paired `comparisons` and `extra_images` (caption ->
    image file, e.g. an analysis heatmap, copied beside the report).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks: list[Block] = [("h1", title)] + ([("p", intro)] if intro else [])
    for task in dict.fromkeys(r.get("task") for r in rows):
        blocks += _task_blocks([r for r in rows if r.get("task") == task], task, split,
                               budget_methods)
    if comparisons:
        columns = list(dict.fromkeys(k for c in comparisons for k in c))
        blocks += [("h2", "Paired comparisons"), ("table", *table_cells(comparisons, columns))]
    for caption, path in (extra_images or {}).items():
        blocks.append(("image", caption, Path(path).name, Path(path).read_bytes()))
    for block in blocks:
        if block[0] == "image" and not _holds(out / block[2], block[3]):
            write_bytes_atomic(out / block[2], block[3])
    md = write_bytes_atomic(out / "report.md", _markdown(blocks).encode())
    return md, write_bytes_atomic(out / "report.html", _html(blocks, title).encode())


def _task_blocks(rows, task, split, budget_methods) -> list[Block]:
    here = [r for r in rows if r.get("split") == split]
    if not here:
        return [("h2", str(task)), ("p", f"No results on the {split} split.")]
    metric = here[0].get("metric")
    summary = summary_table(here, metric=metric)
    final = final_budget(summary)
    teacher = next((e["teacher_value_mean"] for e in summary
                    if _present(e.get("teacher_value_mean"))), None)
    blocks: list[Block] = [("h2", f"{task}: {metric} on {split}")]
    if teacher is not None:
        blocks.append(("p", f"Teacher {metric}: {_format('value', teacher)}. Each row is a "
                            "configuration at its full training budget; mean ± std over seeds."))
    columns = [c for c in TABLE_COLUMNS if any(format_cell(e, c) != "—" for e in final)]
    blocks.append(("table", *table_cells(final, columns, {"value": str(metric)})))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(task))
    figures = [("depth", depth_figure(summary), f"{task}: retention vs depth")]
    if any(len(v) > 1 for v in _lines(summary, ("method", "strategy", "layers")).values()):
        figures.append(("budget", budget_figure(summary, budget_methods),
                        f"{task}: retention vs training budget"))
    if any(_present(e.get("throughput_ratio_mean")) for e in final):
        figures.append(("pareto", pareto_figure(summary), f"{task}: {metric} vs speed-up"))
    blocks += [("image", caption, f"{slug}-{name}.png", _png(fig))
               for name, fig, caption in figures]
    splits = list(dict.fromkeys(r.get("split") for r in rows))
    if len(splits) > 1:
        blocks += [("h2", f"{task}: agreement with the teacher (%) by split"),
                   ("table", *_agreement_by_split(rows, metric, splits))]
    return blocks


def _agreement_by_split(rows, metric, splits) -> tuple[list[str], list[list[str]]]:
    keys = ("method", "strategy", "layers")
    final = final_budget(summary_table(rows, metric=metric))
    runs: dict[tuple, dict] = {}
    for entry in final:
        runs.setdefault(tuple(entry[k] for k in keys), {})[entry["split"]] = entry
    head = [*keys, *splits]
    cells = [[str(v) for v in key] + [
        format_cell(by_split[s], "agreement") if s in by_split else "—" for s in splits]
        for key, by_split in runs.items()]
    return head, cells


def _markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            parts.append(f"{'#' * int(kind[1])} {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "table":
            parts.append(_markdown_table(block[1], block[2]))
        else:
            parts.append(f"![{block[1]}]({block[2]})")
    return "\n\n".join(parts) + "\n"


def _markdown_table(head: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _html(blocks: Sequence[Block], title: str) -> str:
    esc = html.escape
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{esc(str(block[1]))}</{kind}>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                           for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            mime = mimetypes.guess_type(block[2])[0] or "image/png"
            data = base64.b64encode(block[3]).decode()
            body.append(f'<figure><img alt="{esc(block[1])}" src="data:{mime};base64,{data}">'
                        f"<figcaption>{esc(block[1])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _figure() -> tuple[Figure, object]:
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _lines(summary: Sequence[Mapping], keys: Sequence[str]) -> dict[str, list[Mapping]]:
    """Entries grouped into plot lines, labelled by the keys' values."""
    lines: dict[str, list[Mapping]] = {}
    for entry in summary:
        lines.setdefault(" / ".join(str(entry.get(k)) for k in keys), []).append(entry)
    return lines


def _correct(predictions: Sequence, labels: Sequence) -> np.ndarray:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape} predictions for {labels.shape} labels")
    return predictions == labels


def _holds(path: Path, data: bytes) -> bool:
    """Whether `path` already has exactly `data` (an extra image that lives in the folder)."""
    return path.is_file() and path.read_bytes() == data


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _budget(entry: Mapping) -> float:
    budget = entry.get("budget")
    return float(budget) if _present(budget) else -math.inf


def _pct(value: float | None) -> float:
    return 100.0 * value if _present(value) else math.nan


def _higher_is_better(summary: Sequence[Mapping]) -> bool:
    metric = METRICS.get(str(summary[0].get("metric"))) if summary else None
    return metric.higher_is_better if metric is not None else True


def _format(key: str, value) -> str:
    if not _present(value):
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


def _order_key(summary: Sequence[Mapping], keys: Sequence[str]):
    """Depth before method (deepest first), budgets ascending, text in order of appearance."""
    first = {k: {v: i for i, v in reversed(list(enumerate(e.get(k) for e in summary)))}
             for k in keys}
    priority = [k for k in SORT_PRIORITY if k in keys] + [k for k in keys if k not in SORT_PRIORITY]

    def key(entry: Mapping) -> tuple:
        parts = []
        for k in priority:
            value = entry.get(k)
            if k == "layers" and _present(value):
                parts.append(-float(value))
            elif k == "budget":
                parts.append(_budget(entry))
            else:
                parts.append(first[k][value])
        return tuple(parts)

    return key
