"""`layergraft compare`: methods x strategies x depths (x seeds) for one teacher and task,
for any objective (its rows and report: `layergraft.objectives`).

Each run is one `compress` call in its own folder under `out/runs/`, so a rerun after an
interruption reuses every finished run (compress returns a finished `results.json`
with the same settings as is, and resumes an unfinished one from its checkpoints). The
flattened rows, `results.csv` / `results.json` and the report are rewritten after
every run, so what is done is always on disk. `grid_status` tells, running nothing, which
runs are done, stale (finished with other settings) or still to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from layergraft.errors import LayergraftError
from layergraft.objectives.base import get_objective
from layergraft.objectives.strategies import GRAFT_GRID, STRATEGIES
from layergraft.report.rows import record_rows, strategy_label  # noqa: F401 (imported from here)
from layergraft.surgery.methods import DECODER_METHODS, METHODS
from layergraft.training.budget import Budget


@dataclass(frozen=True)
class RunKey:
    """One cell of the comparison grid."""

    method: str
    strategy: str
    layers: int
    seed: int = 0
    budget: float = 1.0  # fraction of the comparison's full training budget
    heal: int = 0  # local healing steps before training (charged against the budget)

    @property
    def name(self) -> str:
        share = "" if self.budget == 1.0 or self.strategy == "none" else f"-b{self.budget:g}"
        return (f"L{self.layers}-{self.method}-{strategy_label(self.strategy, self.heal)}"
                f"-s{self.seed}{share}")

    def scaled(self, full: Budget) -> Budget:
        """This run's share of the full budget, in its unit (`Budget.share`)."""
        return full.share(self.budget)


def plan_runs(
    layers: Sequence[int],
    methods: Sequence[str] = tuple(METHODS),
    strategies: Sequence[str] = ("distill",),
    graft_strategies: Sequence[str] = GRAFT_GRID,
    seeds: Sequence[int] = (0,),
) -> list[RunKey]:
    """Every method with `strategies`, plus `graft` with `graft_strategies`, per depth/seed."""
    known = {**METHODS, **DECODER_METHODS}  # the decoder baselines: with --objective lm
    for name in (*methods, "graft"):
        if name not in known:
            raise LayergraftError(f"unknown method '{name}': choose from {', '.join(known)}")
    for name in (*strategies, *graft_strategies):
        if name not in STRATEGIES:
            raise LayergraftError(
                f"unknown strategy '{name}': choose from {', '.join(STRATEGIES)}")
    cells = [(m, s) for m in methods for s in strategies]
    if "graft" in methods or graft_strategies:
        cells += [("graft", s) for s in graft_strategies]
    unique = list(dict.fromkeys(cells))
    return [RunKey(m, s, n, seed) for n in layers for seed in seeds for m, s in unique]


def run_comparison(
    teacher_path: str,
    task,
    out_dir: str | os.PathLike,
    runs: Sequence[RunKey],
    *,
    objective: str = "task",
    title: str | None = None,
    on_result: Callable[[RunKey, Mapping], None] | None = None,
    **compress_options,
) -> list[dict]:
    """Run (or reuse) every cell of `objective`, writing its rows after every run and its
    report at the end (`layergraft.objectives.base.Objective`: rows, write_rows, report).

    `compress_options` go to every `compress` call unchanged (budget, precision, device, distill,
    graft options, ...), which is what keeps the comparison fair.
    """
    plug = get_objective(objective)
    title = title or f"{plug.comparison_title}: {teacher_path}"
    teacher_rows: list[dict] = []
    by_run: dict[str, list[dict]] = {}
    record = None
    for key, record in grid_cells(teacher_path, task, out_dir, runs,
                                  {**compress_options, "objective": objective}):
        teacher_rows = teacher_rows or plug.teacher_rows(record)
        by_run[key.name] = plug.rows(record, key)
        if on_result is not None:
            on_result(key, record)
        plug.write_rows(_flat(teacher_rows, by_run), Path(out_dir), title)
    if by_run and plug.times_shapes and compress_options.get("speed", True):
        from layergraft.pipeline.shape_speed import shape_rows

        by_run = shape_rows(teacher_path, task, out_dir, by_run, compress_options)
        plug.write_rows(_flat(teacher_rows, by_run), Path(out_dir), title)
    rows = _flat(teacher_rows, by_run)
    plug.write_report(rows, Path(out_dir), title, record)
    return rows


def _flat(teacher_rows: list[dict], by_run: Mapping[str, list[dict]]) -> list[dict]:
    """The teacher's rows, then every run's, in the grid's order."""
    return teacher_rows + [row for rows in by_run.values() for row in rows]


def grid_status(teacher_path: str, task, out_dir: str | os.PathLike, runs: Sequence[RunKey],
                compress: Callable[..., dict] | None = None, **compress_options) -> list[dict]:
    """What `run_comparison` would do, running nothing: one row per run with its name,
    method, strategy, layers, seed and status, "done", "stale" (a results.json of other
    settings, to be redone) or "to do" (`layergraft.objectives.runs.run_status`)."""
    return [{"run": key.name, "method": key.method, "strategy": key.strategy,
             "layers": key.layers, "seed": key.seed, "status": record["status"]}
            for key, record in grid_cells(teacher_path, task, out_dir, runs,
                                          {**compress_options, "dry_run": True}, compress)]


def format_status(rows: Sequence[Mapping]) -> str:
    """`grid_status` rows as a table, then how many runs are in each status."""
    from layergraft.objectives.runs import DONE, STALE, TO_DO
    from layergraft.report.tables import text_table

    columns = ("run", "method", "strategy", "layers", "seed", "status")
    table = text_table(columns, [[str(row[c]) for c in columns] for row in rows])
    counts = ", ".join(f"{sum(row['status'] == s for row in rows)} {s}"
                       for s in (DONE, STALE, TO_DO))
    return f"{table}\n{len(rows)} runs: {counts}"


def grid_cells(teacher_path: str, task, out_dir: str | os.PathLike, runs: Sequence[RunKey],
               options: dict, compress: Callable[..., dict] | None = None
               ) -> Iterator[tuple[RunKey, dict]]:
    """Each run's key and `compress` record, in order (`compress(teacher, task, layers=,
    method=, strategy=, seed=, budget=, out_dir=, **options)`: by default the classifier's;
    `task` may be None where it takes none). Every request is checked before the first run,
    not after hours of others: a stale run (finished with other settings) is refused unless
    `replace_other_runs`."""
    from layergraft.data.tasks import as_source
    from layergraft.objectives.runs import STALE
    from layergraft.objectives.strategies import PER_STAGE, check_request

    if not runs:
        raise LayergraftError("nothing to compare: give at least one method and depth")
    options = dict(options)
    schedule = options.pop("progressive_schedule", PER_STAGE)
    if schedule != PER_STAGE and all(key.strategy != "progressive" for key in runs):
        raise LayergraftError(f"--progressive-schedule {schedule} is for progressive runs and "
                              "this grid has none: add progressive to --graft-strategies or "
                              "drop the option")

    def schedule_of(key: RunKey) -> dict:  # the schedule is a setting of progressive runs only
        return {"progressive_schedule": schedule} if key.strategy == "progressive" else {}

    for key in runs:
        check_request(key.method, key.strategy, options.get("pairs"), options.get("heal"),
                      options=options.get("graft_options"), **schedule_of(key))
    if compress is None:
        from layergraft.pipeline.auto import compress_auto as compress
    source = as_source(task) if task is not None else None
    full = Budget.parse(options.pop("budget", "3 epochs"))
    cells = [(key, dict(layers=key.layers, method=key.method, strategy=key.strategy,
                        seed=key.seed, budget=key.scaled(full),
                        out_dir=Path(out_dir) / "runs" / key.name, **options,
                        **schedule_of(key))) for key in runs]
    if not options.get("dry_run") and not options.get("replace_other_runs"):
        stale = [key.name for key, cell in cells
                 if compress(teacher_path, source, **{**cell, "dry_run": True})["status"] == STALE]
        if stale:
            raise LayergraftError(f"{len(stale)} run(s) finished with other settings "
                                  f"({', '.join(stale)}): redo them with --replace-stale, or "
                                  "choose another --out")
    for key, cell in cells:
        yield key, compress(teacher_path, source, **cell)
