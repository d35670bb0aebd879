"""BENCHMARKS.md's 12-layer section (issue 14), from benchmarks/results/mpnet.json alone:
the stage's run time and memory, the teacher, a table per depth (seed means ± sample std),
the budget curve at 6 layers and the issue's targets, each MET, MISSED or NOT YET MEASURED."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lib import mpnet_plan as mpnet
from lib.jsonstore import read_rows
from lib.paired import paired_table
from lib.stages import run_rows, teacher_table

from layergraft.data.tasks import get_spec
from layergraft.report.tables import format_cell, markdown_from_cells
from report import targets

TASK = mpnet.TASK
QUALITY = {6: 0.995, 4: 0.985, 3: 0.97, 2: 0.94}
STRICT_DEPTHS = (4, 3, 2)  # above every baseline by more than the combined std; 6: not below
SIZE_HOURS = 12  # issue 14: the stage fits into at most 12 single-core hours
SPLITS = ("test", *get_spec(TASK).ood)


def section(path: Path) -> list[str]:
    rows = read_rows(path)
    parts = ["## 12 layers: all-mpnet-base-v2 cut to 6, 4, 3 and 2 (issue 14)", _intro()]
    if not rows:
        return parts + ["No runs yet: `python benchmarks/mpnet.py`."]
    res = targets.Results(rows)
    checks = evaluate(rows, res)
    parts += [_stages(rows), teacher_table(rows) or "Teacher: not trained yet.",
              markdown_from_cells(["target", "scope", "needed", "measured", "status"],
                                  [[c.target, c.scope, c.needed, c.measured, c.status]
                                   for c in checks])]
    for layers in mpnet.DEPTHS:
        parts += [f"### 12 -> {layers} layers, full budget", _depth_table(res, layers)]
    return parts + ["### Budget curve at 6 layers (test retention)", _curve(rows, res),
                    *paired_table(rows, TASK), *_size_and_speed(rows)]


def _intro() -> str:
    return (f"Generated from `benchmarks/results/mpnet.json` by `python benchmarks/mpnet.py` "
            f"(resumable, one process per core; `--dry-run` shows what is left). Teacher: "
            f"all-mpnet-base-v2 (`layergraft assets mpnet`) fine-tuned on {TASK}'s full train "
            f"split, best dev epoch, seed 0, fp32. Students: every method at 6, 4, 3 and 2 "
            f"layers, distilled with the same full budget, {mpnet.FULL_BUDGET} (the MiniLM "
            f"suite uses three: see `benchmarks/mpnet.py` for why), fp32, length-grouped "
            f"batches; graft's strategy is chosen on the MiniLM dev ablations (issue 13): "
            f"{mpnet.GRAFT_STRATEGY or 'not chosen yet'}. Surgery-only rows are scored on dev "
            f"and test only; agreement is pooled over {' + '.join(SPLITS)}, weighted by "
            f"examples. The strongest baseline is the one of best seed-0 dev retention.")


def evaluate(rows: Sequence[Mapping], res: targets.Results) -> list[targets.Check]:
    """Every check of issue 14's targets, in the issue's order."""
    strategy = mpnet.GRAFT_STRATEGY
    checks = []
    for layers in mpnet.DEPTHS:
        scope = f"12 -> {layers}"
        graft = _graft(res, "test", layers)
        checks.append(targets.quality_verdict(scope, graft, QUALITY[layers]))
        checks.append(_depth(rows, res, layers, scope))
    rival = mpnet.strongest_baseline(rows, 6)
    checks.append(targets.compute_verdict(
        "12 -> 6", rival and res.get(TASK, "test", rival, "distill", 6),
        {0.0: res.get(TASK, "test", "graft", "none", 6),
         **({b: res.get(TASK, "test", "graft", strategy, 6, b) for b in (0.125, 0.25)}
            if strategy else {})}))
    for layers in mpnet.DEPTHS:
        pooled = {"graft": _pooled(res, "graft", strategy, layers)}
        pooled |= {m: _pooled(res, m, "distill", layers) for m in mpnet.BASELINES}
        checks.append(targets.fidelity_verdict(f"12 -> {layers}", SPLITS, pooled))
    return checks + targets.speed_checks(rows, mpnet.DEPTHS)


def _depth(rows: Sequence[Mapping], res: targets.Results, layers: int,
           scope: str) -> targets.Check:
    """At 6 and 3 layers graft and the strongest baseline have 3 seeds; at 4 and 2 one, so
    there the seed stds are borrowed from the nearest seeded depth, 3 layers (graft's for
    graft, the strongest baseline's for every baseline)."""
    graft = _graft(res, "test", layers)
    bases = {m: res.get(TASK, "test", m, "distill", layers) for m in mpnet.BASELINES}
    strongest = mpnet.strongest_baseline(rows, layers)
    if layers in mpnet.SEEDED_DEPTHS:
        return targets.depth_verdict(scope, graft, bases, strongest, layers in STRICT_DEPTHS)
    seeded = min(mpnet.SEEDED_DEPTHS, key=lambda n: abs(n - layers))
    rival = mpnet.strongest_baseline(rows, seeded)
    graft_std = (_graft(res, "test", seeded) or {}).get("retention_std")
    base_std = (res.get(TASK, "test", rival, "distill", seeded) or {}).get("retention_std") \
        if rival else None
    if graft_std is None or base_std is None:
        return targets.depth_verdict(scope, graft, bases, strongest, True)
    return targets.depth_verdict(
        f"{scope} (stds of 12 -> {seeded})",
        graft and {**graft, "retention_std": graft_std},
        {m: e and {**e, "retention_std": base_std} for m, e in bases.items()},
        strongest, True, min_seeds=1)


def _pooled(res: targets.Results, method: str, strategy: str | None,
            layers: int) -> float | None:
    """Agreement pooled over `SPLITS`; None while a split (or graft's strategy) is missing."""
    if strategy is None:
        return None
    return targets.pooled_agreement([res.get(TASK, s, method, strategy, layers)
                                     for s in SPLITS])


def _graft(res: targets.Results, split: str, layers: int) -> Mapping | None:
    strategy = mpnet.GRAFT_STRATEGY
    return res.get(TASK, split, "graft", strategy, layers) if strategy else None


def _stages(rows: Sequence[Mapping]) -> str:
    """Runs done / planned and single-core hours per stage, and the largest training peak."""
    runs = run_rows(rows)
    cells, hours, left = [], [], 0
    for stage, text in mpnet.STAGES.items():
        done = {r["run"]: r.get("run_seconds") or 0.0 for r in runs if r.get("stage") == stage}
        planned = len(mpnet.plan(stage, rows))
        left += planned - len(done)
        hours.append(sum(done.values()) / 3600)
        cells.append([stage, text, f"{len(done)} / {planned}", f"{hours[-1]:.2f}"])
    teacher = next((r for r in rows if r.get("kind") == "teacher"), None)
    teacher_h = teacher["train_seconds"] / 3600 if teacher else 0.0
    total = teacher_h + sum(hours)
    peaks = [r["peak_rss_bytes"] for r in runs
             if r.get("peak_rss_bytes") and r["strategy"] != "none"]
    peak = f"{max(peaks) / 2**30:.2f} GiB" if peaks else "not measured yet"
    return (markdown_from_cells(["stage", "what", "runs done / planned", "run time (h)"], cells)
            + f"\n\nSingle-core hours{' so far' if left else ''}, teacher ({teacher_h:.2f} h) "
            f"included: {total:.2f} (issue 14 allows {SIZE_HOURS}{_size_verdict(total, left)}; "
            "a run's hours are its wall seconds, two runs sharing the 2 cores). Peak resident "
            "memory of a training run "
            f"(largest over the runs, teacher and student in one process): {peak}.")


def _size_verdict(hours: float, runs_left: int) -> str:
    if runs_left:
        return ""
    return ": MET" if hours <= SIZE_HOURS else ": MISSED"


def _size_and_speed(rows: Sequence[Mapping]) -> list[str]:
    """Parameters, size on disk and speed-up of each timed graft student, from the one
    interleaved speed run of the teacher and those students; nothing before it ran."""
    speed = {(r["layers"], r["batch"]): r for r in rows if r.get("kind") == "speed"}
    if not speed:
        return []
    first = next(iter(speed.values()))
    cells = [["12 (teacher)", f"{first['teacher_params'] / 1e6:.1f}M", "100%",
              format_cell({"size_bytes": first["teacher_size_bytes"]}, "size_bytes"), "1×", "1×"]]
    for layers in sorted({k[0] for k in speed}, reverse=True):
        row = speed.get((layers, 32)) or speed[(layers, 1)]
        ups = [f"{speed[(layers, b)]['speed_up']:.2f}×" if (layers, b) in speed else "—"
               for b in (32, 1)]
        cells.append([f"{layers}", f"{row['params'] / 1e6:.1f}M",
                      f"{100 * row['params'] / row['teacher_params']:.0f}%",
                      format_cell(row, "size_bytes"), *ups])
    return [f"### Size and speed (graft's students, timed with the teacher in one interleaved "
            f"run of {first['repeats']} repeats on dev lengths, {first['threads']} thread(s))",
            markdown_from_cells(["layers", "parameters", "of the teacher", "on disk",
                                 "speed-up, batch 32", "speed-up, batch 1"], cells)]


def _depth_table(res: targets.Results, layers: int) -> str:
    configs = [("graft", mpnet.GRAFT_STRATEGY)] if mpnet.GRAFT_STRATEGY else []
    configs += [(m, "distill") for m in mpnet.BASELINES]
    configs += [(m, "none") for m in mpnet.METHODS]
    cells = []
    for method, strategy in configs:
        test = res.get(TASK, "test", method, strategy, layers)
        if test is None:
            continue
        pooled = _pooled(res, method, strategy, layers)
        cells.append([method, strategy, f"{test['n']}",
                      format_cell(res.get(TASK, "dev", method, strategy, layers) or {},
                                  "retention"),
                      format_cell(test, "value"), format_cell(test, "retention"),
                      format_cell(test, "agreement"), targets.pct(pooled, 1),
                      format_cell(test, "train_seconds")])
    if not cells:
        return "No runs yet."
    return markdown_from_cells(["method", "strategy", "seeds", "dev retention %",
                                "accuracy", "retention %", "test agreement %",
                                "pooled agreement", "train s"], cells)


def _curve(rows: Sequence[Mapping], res: targets.Results) -> str:
    rival = mpnet.strongest_baseline(rows, 6)
    configs = [(m, s) for m, s in (("graft", mpnet.GRAFT_STRATEGY), (rival, "distill")) if m and s]
    if not configs:
        return "Waits for graft's strategy (issue 13) and the 6-layer baselines."
    budgets = (0.0, *sorted(mpnet.CURVE_BUDGETS), 1.0)
    cells = [[method, strategy] + [
        targets.describe(e) if (e := res.get(TASK, "test", method, strategy if b else "none",
                                             6, b)) else "—"
        for b in budgets] for method, strategy in configs]
    heads = ["0 (surgery)", *(f"{b:g}" for b in budgets[1:])]
    return markdown_from_cells(["method", "strategy", *heads], cells)
