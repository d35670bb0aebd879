"""A compress run's folder and its resume rules: `layergraft.objectives.runs`, under the name
the benchmarks and older callers import."""

from layergraft.objectives.runs import (  # noqa: F401
    CHECKPOINTS,
    DONE,
    FORMAT,
    HEALED,
    PREDICTIONS_NAME,
    PROGRESSIVE,
    RESULTS_NAME,
    SETTINGS_NAME,
    STALE,
    TO_DO,
    WORK_FOLDERS,
    finished_results,
    run_status,
    start_fresh_or_resume,
)
