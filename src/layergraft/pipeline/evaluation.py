"""Score a classifier on a task split: `layergraft.objectives.task.evaluation`, under the
name the commands, the benchmarks and older callers import."""

from layergraft.objectives.task.evaluation import (  # noqa: F401
    agreement,
    evaluate_model,
    format_table,
    model_summary,
    predict,
    save_results,
)
