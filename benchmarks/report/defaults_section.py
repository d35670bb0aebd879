"""BENCHMARKS.md's section for issue 32's default-recipe stage (`suites/defaults.py`): what
`compress` with no method chose per teacher, task and depth, its test retention beside the
strongest baseline and graft of the older suites' rows, and issue 32's targets for it. Reads
benchmarks/results/defaults.json, mpnet.json and offline.json only; never trains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lib import mpnet_plan
from lib.defaults_plan import CELLS, TARGETS, Cell
from lib.jsonstore import read_rows
from lib.stages import FULL_BUDGET as MINILM_BUDGET
from lib.stages import TASKS, strongest_baseline

from layergraft.report.stats import summary_table
from layergraft.report.tables import format_cell, markdown_from_cells
from report import targets

HEADING = "## The default recipe (`--method auto`)"
COMMAND = "cd benchmarks && OMP_NUM_THREADS=1 nohup ../.venv/bin/python defaults.py &"
OLD_ROWS = {"mpnet": "mpnet.json", "minilm": "offline.json"}  # the suites it is set beside
TEACHERS = {"mpnet": ("MPNet", 12), "minilm": ("MiniLM", 6)}  # name, layers
NOT_RUN = "not yet run"
CHECKS = ("### Issue 32's targets for the default (MPNet movie-sentiment), and no regression "
          "on MiniLM")
REGRESSION = {targets.MET: "no regression", targets.MISSED: "REGRESSION"}


def section(path: Path) -> list[str]:
    """The section's Markdown blocks; the older suites' files are read beside `path`."""
    rows = read_rows(path)
    parts = [HEADING, _intro()]
    if not rows:
        return parts + [f"The stage has not run yet: `{COMMAND}`, started twice (one process "
                        "per core; `python benchmarks/defaults.py --dry-run` lists the runs).",
                        CHECKS, _checks({}, {})]
    old = {m: targets.Results(read_rows(path.with_name(name))) for m, name in OLD_ROWS.items()}
    means = default_means(rows)
    return parts + ["### What the default chose, and what it kept", _table(rows, means, old),
                    _provenance(rows), CHECKS, _checks(means, old)]


def _intro() -> str:
    return ("Every row is the user's one command, `layergraft compress TEACHER --task T "
            "--layers N` with no method, rate or plan (`--method auto`): graft (rate, then "
            "plan), drop-top and drop-alternate, each probed at its own rates on 1/8 of the "
            "budget (seed 0, dev), the best on dev trained at the suite's full budget (MPNet "
            f"{mpnet_plan.FULL_BUDGET}, MiniLM {MINILM_BUDGET}), fp32, "
            "one thread; dev and test scored, no out-of-domain sets, no timing. `python "
            "benchmarks/defaults.py` (resumable, one process per core; `--dry-run`). Retention "
            "is on test, in the task's target metric (accuracy; Spearman for movie-rating), "
            "mean ± sample std over the seeds present. The older suites' rows beside it were "
            "made under the old defaults (graft and every baseline at lr 4e-4, graft on "
            "uniform pairs), their strongest baseline chosen on seed-0 dev by that suite's "
            "rule (graft at its best strategy on dev). Probe cost is paid once per teacher, "
            "task and depth (by its first seed; the others reuse the cached probes), in "
            "single-core hours.")


def default_means(rows: Sequence[Mapping]) -> dict[tuple[str, str, int], Mapping]:
    """(model, task, layers) -> the default's test retention over the seeds present."""
    entries = summary_table(rows, split="test", fields=("retention",),
                            group_by=("model", "task", "layers", "split", "metric"))
    return {(e["model"], e["task"], e["layers"]): e for e in entries
            if e["metric"] == TASKS[e["task"]]}


def reference(old: Mapping[str, targets.Results],
              cell: Cell) -> tuple[Mapping | None, Mapping | None]:
    """(strongest baseline, graft) on test in the older suite of the cell's teacher, each as
    that suite chooses it on dev (None where that suite has no such rows)."""
    res = old[cell.model]
    if cell.model == "mpnet":
        rival = mpnet_plan.strongest_baseline(res.rows, cell.layers) \
            if cell.task == mpnet_plan.TASK else None
        graft = res.get(cell.task, "test", "graft", mpnet_plan.GRAFT_STRATEGY or "distill",
                        cell.layers)
        return rival and res.get(cell.task, "test", rival, "distill", cell.layers), graft
    pick = strongest_baseline(res.rows, cell.task, cell.layers)
    return (pick and res.get(cell.task, "test", *pick, cell.layers),
            res.best(cell.task, "test", "graft", cell.layers))


def _runs(rows: Sequence[Mapping], cell: Cell) -> list[Mapping]:
    """The cell's test rows in its target metric, one per seed."""
    return sorted((r for r in rows if (r["model"], r["task"], r["layers"]) == (
        cell.model, cell.task, cell.layers) and r["split"] == "test"
        and r["metric"] == cell.metric), key=lambda r: r["seed"])


def recipe(row: Mapping) -> str:
    """`graft intact:3, lr 1e-4`: what the default chose for one run."""
    plan = f" {row['chosen_plan']}" if row.get("chosen_plan") else ""
    return f"{row['chosen_method']}{plan}, lr {row['chosen_lr']:.0e}".replace("e-0", "e-")


def choice(runs: Sequence[Mapping]) -> str:
    """The recipe, or per seed where the seeds chose differently."""
    texts = {r["seed"]: recipe(r) for r in runs}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return "; ".join(f"s{seed}: {text}" for seed, text in texts.items())


def _with_name(entry: Mapping | None) -> str:
    return f"{format_cell(entry, 'retention')} ({entry['method']})" if entry else "—"


def _table(rows: Sequence[Mapping], means: Mapping, old: Mapping[str, targets.Results]) -> str:
    cells = []
    for cell in CELLS:
        runs = _runs(rows, cell)
        if not runs:
            continue
        base, graft = reference(old, cell)
        probes = runs[0].get("probe_dev_retention") or {}
        cells.append([
            TEACHERS[cell.model][0], cell.task, f"{TEACHERS[cell.model][1]} -> {cell.layers}",
            choice(runs),
            f"{len(runs)} / {len(cell.seeds)}",
            format_cell(means[(cell.model, cell.task, cell.layers)], "retention"),
            _with_name(base), format_cell(graft, "retention") if graft else "—",
            ", ".join(f"{m} {targets.pct(v, 1)}" for m, v in probes.items()),
            f"{max(r['probe_seconds'] for r in runs) / 3600:.2f}",
            f"{sum(r['run_seconds'] for r in runs) / 3600:.2f}"])
    return markdown_from_cells(
        ["teacher", "task", "layers", "default chose", "seeds", "test retention %",
         "strongest baseline, old suite", "graft, old suite", "probes (dev retention)",
         "probe cost (h)", "runs (h)"], cells)


def _checks(means: Mapping, old: Mapping[str, targets.Results]) -> str:
    """Issue 32's targets at MPNet movie-sentiment, and no regression on MiniLM."""
    aimed, kept = [], []
    for cell in CELLS:
        entry = means.get((cell.model, cell.task, cell.layers))
        named = entry and {**entry, "method": "default", "strategy": "auto"}
        name, depth = TEACHERS[cell.model]
        scope = f"{name} {cell.task}, {depth} -> {cell.layers}"
        if cell.model == "mpnet" and cell.task == mpnet_plan.TASK:
            check = named and targets.quality_verdict(scope, named, TARGETS[cell.layers])
            aimed.append([scope, f"≥ {100 * TARGETS[cell.layers]:g}%",
                          check.measured if check else "—", check.status if check else NOT_RUN])
        elif cell.model == "minilm":
            kept.append([scope, "≥ the old suite's strongest baseline − combined seed std",
                         *_no_regression(scope, named,
                                         reference(old, cell)[0] if named else None)])
    return markdown_from_cells(["scope", "needed", "measured", "status"], aimed + kept)


def _no_regression(scope: str, default: Mapping | None,
                   base: Mapping | None) -> list[str]:
    """[measured, status]: the default not below the strongest baseline by more than the
    combined seed std (`targets.depth_verdict`, not strict, against that baseline alone)."""
    if default is None:
        return ["—", NOT_RUN]
    if base is None:
        return [targets.describe(default), "no baseline rows"]
    check = targets.depth_verdict(scope, default, {base["method"]: base}, base["method"],
                                  strict=False, min_seeds=1)
    return [f"{targets.describe(default)} vs {targets.describe(base)}",
            REGRESSION.get(check.status, check.status)]


def _provenance(rows: Sequence[Mapping]) -> str:
    teachers = sorted({(r["model"], r["task"], r["teacher_content"]) for r in rows})
    cpus = sorted({r.get("cpu", "not recorded") for r in rows})
    return ("Teachers (content): " + "; ".join(f"{m} {t} {c}" for m, t, c in teachers)
            + f". Run on {'; '.join(cpus)}. The older suites name their teacher by recipe; "
            "a teacher fine-tuned again on another machine may differ from theirs.")
