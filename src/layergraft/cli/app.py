"""The `layergraft` command: each subcommand parses flags and calls one public function.

`layergraft X` calls `layergraft.X` (`layergraft.api`). Options several commands share are
declared once in `cli.options` (option types, and option groups added by decorator);
`compare --config` reads a grid from a TOML file (`cli.config`). Heavy imports (torch,
transformers, datasets) happen inside the handlers so `--help` is instant. A
LayergraftError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from layergraft.cli.config import ConfigOpt
from layergraft.cli.options import (
    EVAL_TASKS,
    METHODS_HELP,
    BatchSizeOpt,
    BudgetOpt,
    EvalTasksOpt,
    EvalWindowsOpt,
    GroupByLengthOpt,
    HarnessOpt,
    JsonOpt,
    ModelArg,
    ObjectiveOpt,
    OptionalTaskOpt,
    OutOpt,
    OverwriteOpt,
    PairsOpt,
    RefitOpt,
    SeedOpt,
    SpeedupBackendOpt,
    SpeedupOpt,
    TaskOpt,
    TextsOpt,
    UntrainedHeadOpt,
    analysis_options,
    app,
    compress_options,
    default_methods,
    eval_tasks,
    graft_options,
    runtime_options,
    split_list,
    task_source,
)
from layergraft.errors import LayergraftError


@app.command()
@task_source
@analysis_options
@runtime_options
def analyze(
    model: ModelArg,
    task: TaskOpt,
    out: OutOpt,
    analysis,
    normalize: Annotated[bool, typer.Option(
        "--normalize/--raw", help="Store each layer's scores divided by their L2 norm.")]
    = False,
    seed: SeedOpt = 0,
    untrained_head: UntrainedHeadOpt = False,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Measure head/neuron importance and layer similarity; write scores, JSON and plots."""
    from dataclasses import asdict, replace

    from layergraft import api

    result = api.analyze(model, task, out=out, device=device, precision=precision,
                         allow_untrained_head=untrained_head,
                         **asdict(replace(analysis, normalize=normalize)))
    cosine = ", ".join(f"{v:.3f}" for v in result.adjacent_cosine.tolist())
    typer.echo(f"adjacent cosine (layer input vs output): {cosine}")
    typer.echo(f"wrote scores, similarity and plots to {out}")


@app.command()
@task_source
@graft_options
@analysis_options
@runtime_options
def graft(
    model: ModelArg,
    out: OutOpt,
    graft_options,
    analysis,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="Target depth; pairs are chosen by similarity when data is given.")]
    = None,
    method: Annotated[str, typer.Option(
        "--method", help="graft, random, average, drop-top, drop-bottom, drop-alternate, "
        "drop-similar.")] = "graft",
    pairs: PairsOpt = None,
    task: OptionalTaskOpt = None,
    analysis_dir: Annotated[Path | None, typer.Option(
        "--analysis", help="Reuse the scores of `layergraft analyze` from this folder.")] = None,
    refit: RefitOpt = 0,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    untrained_head: UntrainedHeadOpt = False,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Surgery only: merge adjacent layers into a smaller model of standard shape."""
    from layergraft import api

    path = api.graft(model, out=out, layers=layers, pairs=pairs, method=method, task=task,
                     analysis=analysis_dir, seed=seed, refit=refit, overwrite=overwrite,
                     settings=analysis, options=graft_options, device=device,
                     precision=precision, allow_untrained_head=untrained_head)
    typer.echo(f"saved the grafted model to {path}")


@app.command()
@task_source
@runtime_options
def finetune(
    model: ModelArg,
    task: TaskOpt,
    out: OutOpt,
    epochs: Annotated[float, typer.Option("--epochs", help="Training epochs.")] = 2.0,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Stop after this many optimizer steps (overrides --epochs).")]
    = None,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 5e-5,
    batch_size: BatchSizeOpt = 32,
    seed: SeedOpt = 0,
    group_by_length: GroupByLengthOpt = False,
    overwrite: OverwriteOpt = False,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Make a teacher: fine-tune a pretrained encoder on a task (resumes if interrupted)."""
    from layergraft import api

    record = api.finetune(model, task, out=out, overwrite=overwrite, epochs=epochs,
                          max_steps=max_steps, learning_rate=learning_rate,
                          batch_size=batch_size, seed=seed, device=device,
                          precision=precision,
                          group_by_length=group_by_length)
    _print_scores(record["task"], {k: record[k] for k in ("dev", "test") if k in record})
    typer.echo(f"saved the fine-tuned model to {out} ({record['train_seconds']} s of training)")


@app.command()
@task_source
@runtime_options
def evaluate(
    model: ModelArg,
    task: OptionalTaskOpt = None,
    split: Annotated[list[str] | None, typer.Option(
        "--split", help="Split(s) to score (default: the task's evaluation splits); 'ood' "
        "adds the task's out-of-domain sets.")] = None,
    objective: ObjectiveOpt = "task",
    teacher: Annotated[str | None, typer.Option(
        "--teacher", help="With --objective embedding: the model to compare with (default: "
        "the teacher its compress run names); with lm: perplexity, KL and agreement beside "
        "this model's (default: the model alone).")] = None,
    texts: TextsOpt = None,
    eval_task: EvalTasksOpt = EVAL_TASKS,
    json_path: JsonOpt = None,
    untrained_head: UntrainedHeadOpt = False,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Score a model on a task: a table on screen and, with --json, a JSON record."""
    from layergraft import api
    from layergraft.objectives.task.evaluation import format_table, save_results

    embedding = objective == "embedding"
    records = api.evaluate(model, task, splits=split, device=device, precision=precision,
                           allow_untrained_head=untrained_head, objective=objective,
                           teacher=teacher, texts=texts,
                           eval_tasks=eval_tasks(eval_task) if embedding else None)
    if embedding:
        from layergraft.objectives.base import get_objective

        typer.echo(f"{model}: {get_objective(objective).headline(records[0])}")
    elif objective == "lm":
        from layergraft.objectives.lm.evaluate import format_lines

        typer.echo(format_lines(records))
    else:
        typer.echo(format_table(records))
    if json_path is not None:
        save_results(records if len(records) > 1 else records[0], json_path)


@app.command()
@task_source
@compress_options
@runtime_options
def compress(
    teacher: ModelArg,
    out: OutOpt,
    options,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="Depth of the student (or --speedup).")] = None,
    speedup: SpeedupOpt = None,
    speedup_backend: SpeedupBackendOpt = "torch-fp32",
    task: OptionalTaskOpt = None,
    objective: ObjectiveOpt = "task",
    texts: TextsOpt = None,
    eval_task: EvalTasksOpt = EVAL_TASKS,
    method: Annotated[str | None, typer.Option("--method", help=(
        "Surgery method, or auto: the best on dev of graft and the strongest drops "
        "(drop-top, drop-alternate), each at its own rate (--lr and --plan default to auto "
        "with it). Default: auto for a classifier, graft for --objective embedding and lm."))]
    = None,
    strategy: Annotated[str, typer.Option(
        "--strategy", help="none, heal (with --heal), finetune, distill, progressive or replace.")]
    = "distill",
    budget: BudgetOpt = "3 epochs",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    untrained_head: UntrainedHeadOpt = False,
    harness: HarnessOpt = False,
    eval_windows: EvalWindowsOpt = 32,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Surgery + training + evaluation + speed: a student, its manifest and results.json."""
    from layergraft import api

    speed = ({"speedup": speedup, "speedup_backend": speedup_backend}
             if speedup is not None else {})
    if objective != "task":
        extra = ({"text_column": task.text_column if task is not None else None,
                  "eval_tasks": eval_tasks(eval_task)} if objective == "embedding"
                 else {"harness": harness, "eval_windows": eval_windows})
        record = api.compress(teacher, task, layers=layers, out=out, objective=objective,
                              texts=texts, method=method, **extra,
                              strategy=strategy, budget=budget, seed=seed, device=device,
                              precision=precision, overwrite=overwrite, **speed, **options)
        from layergraft.objectives.base import get_objective

        typer.echo(get_objective(objective).headline(record))
        kind = "sentence-transformers model" if objective == "embedding" else "causal LM"
        typer.echo(f"saved the {layers}-layer {kind} and results.json to {out}")
        return
    record = api.compress(teacher, task, layers=layers, out=out, objective=objective,
                          texts=texts, method=method, **speed,
                          strategy=strategy, budget=budget, seed=seed, device=device,
                          precision=precision, allow_untrained_head=untrained_head,
                          overwrite=overwrite, **options)
    _print_scores(record["task"], {s: record[s]["metrics"] for s in ("dev", "test")
                                   if s in record})
    from layergraft.pipeline.auto import describe_choices

    if chosen := describe_choices(record):
        typer.echo(chosen)
    typer.echo(f"saved the {record.get('layers', layers)}-layer student and results.json to {out}")


@app.command()
@task_source
@compress_options
@runtime_options
def compare(
    teacher: Annotated[str | None, typer.Argument(
        help="Teacher folder, hub name or 'minilm' (or teacher in --config).")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="Task name or data file (or task in --config).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (or out in --config).")] = None,
    layers: Annotated[list[str] | None, typer.Option(
        "--layers", help="Depths, e.g. 3,2 (or --layers 3 --layers 2; default 3).")] = None,
    methods: Annotated[str | None, typer.Option("--methods", help=METHODS_HELP)] = None,
    strategies: Annotated[str | None, typer.Option(
        "--strategies", help="Strategies for every method (default: distill; none,distill "
        "with --objective embedding).")] = None,
    graft_strategies: Annotated[str | None, typer.Option(
        "--graft-strategies", help="Extra strategies for graft ('' for none; default: "
        "none,finetune,distill,progressive, none with --objective embedding).")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, e.g. 0,1,2.")] = "0",
    budget: BudgetOpt = "3 epochs",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Train nothing: list every run and whether it is done, stale "
        "(finished with other settings) or to do.")] = False,
    replace_stale: Annotated[bool, typer.Option(
        "--replace-stale", help="Redo the runs that finished with other settings (stale) "
        "instead of refusing to start.")] = False,
    config: ConfigOpt = None,
    objective: ObjectiveOpt = "task",
    texts: TextsOpt = None,
    eval_task: EvalTasksOpt = EVAL_TASKS,
    *,
    options,
    untrained_head: UntrainedHeadOpt = False,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Every method x strategy x depth under one budget: results.csv/json and a report."""
    from layergraft import api

    embedding = objective == "embedding"
    data = ("--task or --texts", texts if embedding and task is None else task)
    data = ("--texts", texts or "movie-text") if objective == "lm" else data  # a default text
    methods = methods or default_methods(objective)
    missing = [name for name, value in (("TEACHER", teacher), data, ("--out", out))
               if value is None]
    if missing:
        raise LayergraftError(f"give {', '.join(missing)}, on the command line or in a "
                              "--config file")
    defaults = ("none,distill", "") if objective != "task" else (
        "distill", "none,finetune,distill,progressive")
    grid = dict(layers=[n for value in layers or ["3"] for n in split_list(value, int,
                                                                           "--layers")],
                methods=split_list(methods), strategies=split_list(strategies or defaults[0]),
                graft_strategies=split_list(defaults[1] if graft_strategies is None
                                            else graft_strategies),
                seeds=split_list(seeds, int, "--seeds"), budget=budget, device=device,
                precision=precision, replace_other_runs=replace_stale, **options)
    if objective != "task":
        grid.update(objective=objective, texts=texts,
                    **({"eval_tasks": eval_tasks(eval_task)} if embedding else {}))
    else:
        grid["allow_untrained_head"] = untrained_head
    if dry_run:
        from layergraft.pipeline.compare import format_status

        typer.echo(format_status(api.compare(teacher, task, out=out, dry_run=True, **grid)))
        return
    from layergraft.objectives.base import get_objective

    headline = get_objective(objective).headline
    api.compare(teacher, task, out=out, **grid,
                on_result=lambda key, record: typer.echo(f"done {key.name}: {headline(record)}"))
    typer.echo(f"wrote results.json and report.md to {out}" if embedding else
               f"wrote results.csv, results.json and report.md/.html to {out}")


def _print_scores(task: str, by_split: dict) -> None:
    for split, metrics in by_split.items():
        scores = ", ".join(f"{name} {100 * value:.2f}" for name, value in metrics.items())
        typer.echo(f"{task} {split}: {scores}")


from layergraft.cli import tools  # noqa: E402,F401  (export, demo, assets after the core)


def main() -> None:
    """Console entry point: user errors become one line and exit status 2."""
    try:
        app()
    except LayergraftError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)

