"""A report from rows: Markdown (PNGs beside it) and a self-contained HTML page.

Per task: the summary table, the figures the rows allow and agreement by split; then any
paired comparisons and extra images. Every number comes from the rows it is given.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from layergraft.report.figures import budget_figure, depth_figure, pareto_figure, png_bytes
from layergraft.report.stats import final_budget, group_lines, present, summary_table
from layergraft.report.tables import (
    TABLE_COLUMNS,
    format_cell,
    format_value,
    markdown_from_cells,
    table_cells,
)
from layergraft.utils import write_bytes_atomic

SHAPE_SPEED = "shape speed-up"  # rows whose speed is their shape's, timed once per report
SHAPE_AXIS = "shape speed vs teacher (each shape timed once, one interleaved run)"
# ("h1" | "h2" | "p", text) | ("table", headers, cells) | ("image", caption, file name, bytes)
Block = tuple


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
                    if present(e.get("teacher_value_mean"))), None)
    blocks: list[Block] = [("h2", f"{task}: {metric} on {split}")]
    if teacher is not None:
        blocks.append(("p", f"Teacher {metric}: {format_value('value', teacher)}. Each row is a "
                            "configuration at its full training budget; mean ± std over seeds."))
    columns = [c for c in TABLE_COLUMNS if any(format_cell(e, c) != "—" for e in final)]
    by_shape = any("shape" in r for r in here)  # one speed per shape (pipeline.shape_speed)
    speed = {"throughput_ratio": SHAPE_SPEED} if by_shape else {}
    blocks.append(("table", *table_cells(final, columns, {"value": str(metric), **speed})))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(task))
    figures = [("depth", depth_figure(summary), f"{task}: retention vs depth")]
    if any(len(v) > 1 for v in group_lines(summary, ("method", "strategy", "layers")).values()):
        figures.append(("budget", budget_figure(summary, budget_methods),
                        f"{task}: retention vs training budget"))
    if any(present(e.get("throughput_ratio_mean")) for e in final):
        figures.append(("pareto", pareto_figure(summary, SHAPE_AXIS if by_shape else None),
                        f"{task}: {metric} vs speed-up"))
    blocks += [("image", caption, f"{slug}-{name}.png", png_bytes(fig))
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
            parts.append(markdown_from_cells(block[1], block[2]))
        else:
            parts.append(f"![{block[1]}]({block[2]})")
    return "\n\n".join(parts) + "\n"


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


def _holds(path: Path, data: bytes) -> bool:
    """Whether `path` already has exactly `data` (an extra image that lives in the folder)."""
    return path.is_file() and path.read_bytes() == data
