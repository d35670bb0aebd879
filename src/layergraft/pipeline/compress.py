"""`layergraft compress`: one loop over every objective (`layergraft.objectives`).

The objective (`task`, `embedding`, ...) checks the request and says what identifies the run
(its settings); this loop applies the rules every run shares (`layergraft.objectives.runs`):
a dry run loads nothing and says what a call would do, a finished `results.json` with the
same settings is returned as is, bad data or weights are refused before anything is
written, an unfinished run of the same settings resumes, and another run or model is never
replaced without `overwrite` (`replace_other_runs`: an earlier compress run of other
settings may be). Then the run's one `execute`: surgery and training, evaluation against the
teacher, speed (timed by `layergraft.pipeline.bench.measure_speed`), the student saved as a
stock folder, results.json and the model card. The loop never asks what the model is for.
"""

from __future__ import annotations

import os
from pathlib import Path

from layergraft.objectives.base import get_objective
from layergraft.objectives.runs import finished_results, run_status, start_fresh_or_resume


def compress(teacher_path: str, task=None, *, layers: int, out_dir: str | os.PathLike,
             objective: str = "task", overwrite: bool = False,
             replace_other_runs: bool = False, dry_run: bool = False, **options) -> dict:
    """Compress `teacher_path` to `layers` layers for `objective`; save the student and
    results to `out_dir` and return the results record (also `out_dir/results.json`).

    `task` is the data: a labelled task for `task`; for `embedding` a task whose training
    texts are used, or None with `texts=FILE`. `options` are the objective's
    (`layergraft.objectives.task.TaskObjective.run`: method, strategy, budget, seed,
    precision, device, distill, graft_options, analysis, training, cache_dir, speed, ood,
    progress, refit_samples, heal, pairs, allow_untrained_head, progressive_schedule,
    recalibrate_samples, guard; `layergraft.objectives.embedding.EmbeddingObjective.run`;
    for `lm` a decoder LLM on `texts`, `layergraft.objectives.lm.LMObjective.run`).
    `dry_run` loads and runs nothing: it returns `{"status": "done" | "stale" | "to do",
    "out": ..., "settings": ...}`, what a call would do with `out_dir`.
    """
    from layergraft.pipeline.bench import measure_speed

    run = get_objective(objective).run(str(teacher_path), task, layers=int(layers),
                                       out=Path(out_dir), dry_run=dry_run, **options)
    if dry_run:
        return {"status": run_status(run), "out": str(run.out), "settings": run.settings()}
    state = run.processes()
    finished = finished_results(run, overwrite)
    if finished is not None:
        return finished
    session = run.load(state)
    if state.is_main_process:
        run.out.mkdir(parents=True, exist_ok=True)
        start_fresh_or_resume(run, overwrite, replace_other_runs)
    state.wait_for_everyone()
    return run.execute(session, measure_speed)
