"""Issue 16's embedding stage: sentence-embedding students of all-MiniLM-L6-v2 (and mpnet).

    python benchmarks/embeddings.py                 # the MiniLM plan, most informative first
                                                    # (also: offline.py --stage embeddings)
    python benchmarks/embeddings.py --stage mpnet   # all-mpnet-base-v2, 12 -> 4
                                                    # (first: `layergraft assets mpnet`)
    python benchmarks/embeddings.py --dry-run       # the plan and what is done; runs nothing

Every run is one `compress --objective embedding` folder under benchmarks/work/embeddings/
(resumable: a finished run with the same settings is reused, so interrupt at any time);
after each run its rows (and the teacher's row) replace their old ones in
benchmarks/results/embeddings.json, atomically, and BENCHMARKS.md is rendered again. The
students train on the teacher's embeddings of movie-sentiment's train texts for a fixed
budget (one epoch), fp32 on every machine (the CPU changes between sessions); seed 0 for
every run, seeds 1 and 2 for graft, the recipe and the strongest baseline, which is the
baseline with the highest held-out mean cosine after seed-0 distillation at that depth.
drop-alternate with distillation is the sentence-transformers layer-reduction recipe
(evenly spaced layers, then embedding MSE). Several processes may share the plan (one per
core, `OMP_NUM_THREADS=1`): each run is claimed by a lock under benchmarks/work/embeddings/.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib import measure, paths
from lib.embeddings_plan import (
    ANALYSIS_SAMPLES,
    BUDGET,
    HEAL_LR,
    PRECISION,
    STAGES,
    TASK,
    Planned,
    plan,
    run_settings,
)
from lib.jsonstore import claim, read_rows, update_rows
from lib.stagecli import plan_line, stage_parser
from report import render

from layergraft.embeddings.report import record_row, teacher_row
from layergraft.runtime import cpu_capability
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.training.heal import HealConfig

WORK = paths.WORK / "embeddings"
RESULTS = paths.RESULTS / "embeddings.json"


def run_dir(planned: Planned) -> Path:
    return WORK / planned.model / planned.name


def run_one(planned: Planned) -> None:
    from layergraft import compress

    start = time.perf_counter()
    key = planned.key
    record = compress(
        planned.model, TASK, objective="embedding", layers=key.layers, out=run_dir(planned),
        method=key.method,
        strategy=key.strategy, budget=BUDGET, seed=key.seed, precision=PRECISION,
        heal=HealConfig(steps=planned.heal, learning_rate=HEAL_LR) if planned.heal else None,
        analysis=AnalysisSettings(samples=ANALYSIS_SAMPLES))
    row = {**record_row(record), "model": planned.model, "run": planned.name,
           "heal": planned.heal, "settings": run_settings(),
           "run_seconds": round(time.perf_counter() - start, 1)}
    teacher = {**teacher_row(record), "model": planned.model, "run": "teacher"}

    def replace(rows: list[dict]) -> list[dict]:
        mine = {(planned.model, planned.name), (planned.model, "teacher")}
        kept = [r for r in rows if (r.get("model"), r.get("run")) not in mine]
        return [*kept, teacher, row]

    update_rows(RESULTS, replace)


def environment() -> dict:
    return {**measure.environment(), "cpu_capability": cpu_capability(),
            "precision": PRECISION, "model": "environment", "run": "environment"}


def dry_run(stages: Sequence[str], rows: Sequence[Mapping]) -> str:
    lines = []
    for stage in stages:
        lines.append(f"stage {stage}: {STAGES[stage]}")
        lines += [plan_line(p.name, p.pending, _stored(p, rows)) for p in plan(stage, rows)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = stage_parser(__doc__, STAGES).parse_args(argv)
    stages = args.stage or ["minilm"]
    if args.dry_run:
        print(dry_run(stages, read_rows(RESULTS)))
        return
    for stage in stages:
        run_stage(stage)


def run_stage(stage: str) -> None:
    """Every run of the stage not stored yet (also `python benchmarks/offline.py --stage
    embeddings`); BENCHMARKS.md is rendered after each."""
    update_rows(RESULTS, lambda rows: [*[r for r in rows if r.get("run") != "environment"],
                                       environment()])
    while (planned := _next_run(stage)) is not None:  # the plan grows as rows land
        with claim(WORK / "claims" / f"{planned.model}-{planned.name}.lock") as mine:
            if mine and not _stored(planned, read_rows(RESULTS)):
                run_one(planned)
        render.write(paths.RESULTS / "offline.json", paths.REPO / "BENCHMARKS.md")


def _next_run(stage: str) -> Planned | None:
    """The first planned run that is neither stored nor being run by another process (one
    process per core may share the plan)."""
    rows = read_rows(RESULTS)
    for planned in plan(stage, rows):
        if planned.pending or _stored(planned, rows):
            continue
        with claim(WORK / "claims" / f"{planned.model}-{planned.name}.lock") as free:
            if free:
                return planned
    return None


def _stored(planned: Planned, rows: Sequence[Mapping]) -> bool:
    return any(r.get("model") == planned.model and r.get("run") == planned.name
               and r.get("settings") == run_settings() for r in rows)

