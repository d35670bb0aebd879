"""The `layergraft` command: each subcommand parses flags and calls one public function.

`layergraft X` calls `layergraft.X` (`layergraft.api`). Options several commands share are
declared once: the option types below, and two option groups added by decorator, the column
options of a local data file (`task_source`) and a student's training and distillation
(`student_options`). Heavy imports (torch, transformers, datasets) happen inside the
handlers so `--help` is instant. A LayergraftError becomes one line on stderr and exit
status 2.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from layergraft.errors import LayergraftError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compress fine-tuned BERT-family encoders by grafting adjacent layers, then distilling.",
)

ModelArg = Annotated[str, typer.Argument(
    help="Model folder, hub name, or 'minilm' for the built-in offline all-MiniLM-L6-v2.")]
TaskOpt = Annotated[str, typer.Option(
    "--task", help="Task name (movie-sentiment, movie-rating, sst2, ...) or a CSV/TSV/JSONL "
    "file or folder.")]
OptionalTaskOpt = Annotated[str | None, typer.Option(
    "--task", help="Task name or data file; needed by methods that measure the model.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace a model already saved in --out.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
SamplesOpt = Annotated[int, typer.Option(
    "--samples", help="Training examples used to measure importance and similarity.")]
ImportanceOpt = Annotated[str, typer.Option(
    "--importance", help="Importance score: michel, fisher, weight or activation.")]
LossOpt = Annotated[str, typer.Option(
    "--loss", help="Loss for gradient scores: task (gold labels) or kl (model's own "
    "predictions; no labels needed).")]
BudgetOpt = Annotated[str, typer.Option(
    "--budget", help="Training budget shared by every method and strategy, e.g. '3 epochs' "
    "or '500 steps'.")]
Bf16Opt = Annotated[bool, typer.Option(
    "--bf16", help="bfloat16 autocast (about 2.5x faster on recent CPUs).")]
UntrainedHeadOpt = Annotated[bool, typer.Option(
    "--untrained-head", help="Go on with a model whose classification head was never trained "
    "(a base encoder such as 'minilm'): its task scores mean nothing; train a head with "
    "`layergraft finetune` first.")]
GroupByLengthOpt = Annotated[bool, typer.Option(
    "--group-by-length", help="Batch examples of similar length: less padding, faster "
    "training on CPU (changes which examples share a batch).")]


def _options(**annotated: tuple[object, object]) -> list[inspect.Parameter]:
    """Keyword-only command parameters from name=(Annotated option type, default)."""
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                              default=default) for name, (annotation, default) in annotated.items()]


def _option_group(options: Sequence[inspect.Parameter], combine: Callable[[dict, dict], None],
                  fills: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """A decorator that adds the shared `options` to a command's flags. Before the call,
    `combine(shared, arguments)` folds their values into the command's own arguments; the
    command's parameters named in `fills` are set there and are not flags themselves."""
    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in fills]

        @functools.wraps(command)
        def wrapper(**arguments):
            combine({p.name: arguments.pop(p.name) for p in options}, arguments)
            return command(**arguments)

        wrapper.__signature__ = signature.replace(parameters=[*own, *options])
        return wrapper

    return decorate


def _build_task_source(columns: dict, arguments: dict) -> None:
    """--task and the column options as one TaskSource (None without --task). A lone data file
    is always split with seed 0, so every command (and every training seed) sees the same
    train/dev/test rows."""
    from layergraft.data.tasks import TaskSource

    task = arguments["task"]
    arguments["task"] = TaskSource(task, **columns) if task is not None else None


# Every command with --task: its `task` argument arrives as a TaskSource.
task_source = _option_group(_options(
    text_column=(Annotated[str | None, typer.Option(
        "--text-column", help="Text column of a local file.")], None),
    pair_column=(Annotated[str | None, typer.Option(
        "--pair-column", help="Second-text column of a local file.")], None),
    label_column=(Annotated[str | None, typer.Option(
        "--label-column", help="Label column of a local file.")], None),
    regression=(Annotated[bool | None, typer.Option(
        "--regression/--classification",
        help="Whether a local file's labels are scores or classes (default: inferred).")], None),
), _build_task_source)


def _build_student(flags: dict, arguments: dict) -> None:
    """compress's `training` (from --lr and --group-by-length) and `distill` settings."""
    from layergraft.training.distill import DistillConfig
    from layergraft.training.train import student_training

    arguments["training"] = student_training(flags.pop("learning_rate"),
                                             group_by_length=flags.pop("group_by_length"))
    arguments["distill"] = DistillConfig(**flags)


# Commands that train students: they receive `training` and `distill` built from these.
student_options = _option_group(_options(
    temperature=(Annotated[float, typer.Option("--temperature", help="Distillation T.")], 2.0),
    hidden_weight=(Annotated[float, typer.Option(
        "--hidden-weight", help="Weight of the hidden-state MSE to the teacher (0: off).")], 0.0),
    task_weight=(Annotated[float, typer.Option(
        "--task-weight", help="Weight of the gold-label loss during distillation.")], 0.0),
    learning_rate=(Annotated[float | None, typer.Option(
        "--lr", help="Peak learning rate of the student (default: the package's measured "
        "STUDENT_LEARNING_RATE, 4e-4).")], None),
    group_by_length=(GroupByLengthOpt, False),
), _build_student, fills=("training", "distill"))


@app.command()
@task_source
def analyze(
    model: ModelArg,
    task: TaskOpt,
    out: OutOpt,
    samples: SamplesOpt = 2000,
    importance: ImportanceOpt = "michel",
    loss: LossOpt = "task",
    normalize: Annotated[bool, typer.Option(
        "--normalize/--raw", help="Store each layer's scores divided by their L2 norm.")]
    = False,
    seed: SeedOpt = 0,
    untrained_head: UntrainedHeadOpt = False,
) -> None:
    """Measure head/neuron importance and layer similarity; write scores, JSON and plots."""
    from layergraft import api

    analysis = api.analyze(model, task, out=out, samples=samples, importance=importance,
                           loss=loss, normalize=normalize, seed=seed,
                           allow_untrained_head=untrained_head)
    cosine = ", ".join(f"{v:.3f}" for v in analysis.adjacent_cosine.tolist())
    typer.echo(f"adjacent cosine (layer input vs output): {cosine}")
    typer.echo(f"wrote scores, similarity and plots to {out}")


@app.command()
@task_source
def graft(
    model: ModelArg,
    out: OutOpt,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="Target depth; pairs are chosen by similarity when data is given.")]
    = None,
    method: Annotated[str, typer.Option(
        "--method", help="graft, random, average, drop-top, drop-bottom, drop-alternate, "
        "drop-similar.")] = "graft",
    pairs: Annotated[str | None, typer.Option(
        "--pairs", help="Explicit spans that merge, e.g. 0-1,2-3.")] = None,
    task: OptionalTaskOpt = None,
    analysis: Annotated[Path | None, typer.Option(
        "--analysis", help="Reuse the scores `layergraft analyze` measured on this same model, "
        "from this folder.")] = None,
    bias: Annotated[str, typer.Option(
        "--bias", help="Output biases of a grafted layer: mean, sum, later, earlier.")] = "mean",
    norm: Annotated[str, typer.Option(
        "--norm", help="LayerNorms of a grafted layer: mean, later, earlier.")] = "mean",
    quota: Annotated[str, typer.Option(
        "--quota", help="free (best units overall) or equal (same share from each layer).")]
    = "free",
    max_sources: Annotated[int, typer.Option(
        "--max-sources", help="Graft only the top N layers of each group, dropping the rest "
        "(0: all).")] = 2,
    normalize_scores: Annotated[bool, typer.Option(
        "--normalize-scores", help="Divide each layer's scores by their L2 norm before "
        "choosing units (whatever the scores were stored as).")] = False,
    refit: Annotated[int, typer.Option(
        "--refit", help="Then refit the new layers' FFN output projections to the input "
        "model by least squares on this many task examples (0: off).")] = 0,
    samples: SamplesOpt = 2000,
    importance: ImportanceOpt = "michel",
    loss: LossOpt = "task",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    untrained_head: UntrainedHeadOpt = False,
) -> None:
    """Surgery only: merge adjacent layers into a smaller model of standard shape."""
    from layergraft import api
    from layergraft.scoring.analysis import AnalysisSettings
    from layergraft.surgery.methods import GraftOptions

    path = api.graft(
        model, out=out, layers=layers, pairs=pairs, method=method, task=task,
        analysis=analysis, seed=seed, refit=refit, overwrite=overwrite,
        allow_untrained_head=untrained_head,
        settings=AnalysisSettings(samples=samples, importance=importance, loss=loss, seed=seed),
        options=GraftOptions(bias=bias, norm=norm, normalize_scores=normalize_scores,
                             quota=quota, max_sources=max_sources),
    )
    typer.echo(f"saved the grafted model to {path}")


def _split_list(value: str, cast=str) -> list:
    return [cast(part.strip()) for part in value.split(",") if part.strip()]


@app.command()
@task_source
def finetune(
    model: ModelArg,
    task: TaskOpt,
    out: OutOpt,
    epochs: Annotated[float, typer.Option("--epochs", help="Training epochs.")] = 2.0,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Stop after this many optimizer steps (overrides --epochs).")]
    = None,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 32,
    seed: SeedOpt = 0,
    bf16: Bf16Opt = False,
    group_by_length: GroupByLengthOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Make a teacher: fine-tune a pretrained encoder on a task (resumes if interrupted)."""
    from layergraft import api

    record = api.finetune(model, task, out=out, overwrite=overwrite, epochs=epochs,
                          max_steps=max_steps, learning_rate=learning_rate,
                          batch_size=batch_size, seed=seed, bf16=bf16,
                          group_by_length=group_by_length)
    _print_scores(record["task"], {k: record[k] for k in ("dev", "test") if k in record})
    typer.echo(f"saved the fine-tuned model to {out} ({record['train_seconds']} s of training)")


@app.command()
@task_source
def evaluate(
    model: ModelArg,
    task: TaskOpt,
    split: Annotated[list[str] | None, typer.Option(
        "--split", help="Split(s) to score (default: the task's evaluation splits); 'ood' "
        "adds the task's out-of-domain sets.")] = None,
    json_path: JsonOpt = None,
    bf16: Bf16Opt = False,
    untrained_head: UntrainedHeadOpt = False,
) -> None:
    """Score a model on a task: a table on screen and, with --json, a JSON record."""
    from layergraft import api
    from layergraft.pipeline.evaluation import format_table, save_results

    records = api.evaluate(model, task, splits=split, bf16=bf16,
                           allow_untrained_head=untrained_head)
    typer.echo(format_table(records))
    if json_path is not None:
        save_results(records if len(records) > 1 else records[0], json_path)


@app.command()
@task_source
@student_options
def compress(
    teacher: ModelArg,
    task: TaskOpt,
    layers: Annotated[int, typer.Option("--layers", help="Depth of the student.")],
    out: OutOpt,
    training,
    distill,
    method: Annotated[str, typer.Option("--method", help="Surgery method.")] = "graft",
    strategy: Annotated[str, typer.Option(
        "--strategy", help="none, finetune, distill or progressive.")] = "distill",
    budget: BudgetOpt = "3 epochs",
    seed: SeedOpt = 0,
    bf16: Bf16Opt = False,
    overwrite: OverwriteOpt = False,
    untrained_head: UntrainedHeadOpt = False,
) -> None:
    """Surgery + training + evaluation + speed: a student, its manifest and results.json."""
    from layergraft import api

    record = api.compress(teacher, task, layers=layers, out=out, method=method,
                          strategy=strategy, budget=budget, seed=seed, bf16=bf16,
                          overwrite=overwrite, training=training, distill=distill,
                          allow_untrained_head=untrained_head)
    _print_scores(record["task"], {s: record[s]["metrics"] for s in ("dev", "test")
                                   if s in record})
    typer.echo(f"saved the {layers}-layer student and results.json to {out}")


@app.command()
@task_source
@student_options
def compare(
    teacher: ModelArg,
    task: TaskOpt,
    out: OutOpt,
    training,
    distill,
    layers: Annotated[str, typer.Option("--layers", help="Depths, e.g. 3,2.")] = "3",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated methods.")]
    = "graft,random,average,drop-top,drop-bottom,drop-alternate,drop-similar",
    strategies: Annotated[str, typer.Option(
        "--strategies", help="Strategies for every method.")] = "distill",
    graft_strategies: Annotated[str, typer.Option(
        "--graft-strategies", help="Extra strategies for graft ('' for none).")]
    = "none,finetune,distill,progressive",
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, e.g. 0,1,2.")] = "0",
    budget: BudgetOpt = "3 epochs",
    bf16: Bf16Opt = False,
    untrained_head: UntrainedHeadOpt = False,
) -> None:
    """Every method x strategy x depth under one budget: results.csv/json and a report."""
    from layergraft import api

    api.compare(teacher, task, out=out, layers=_split_list(layers, int),
                methods=_split_list(methods), strategies=_split_list(strategies),
                graft_strategies=_split_list(graft_strategies), seeds=_split_list(seeds, int),
                budget=budget, bf16=bf16, training=training, distill=distill,
                allow_untrained_head=untrained_head,
                on_result=lambda key, record: typer.echo(f"done {key.name}: "
                                                         + _headline(record)))
    typer.echo(f"wrote results.csv, results.json and report.md/.html to {out}")


@app.command()
@task_source
def bench(
    models: Annotated[list[str], typer.Argument(
        help="Model folders; the first is the reference of the speed ratios.")],
    task: TaskOpt,
    split: Annotated[str, typer.Option("--split", help="Split whose lengths are used.")]
    = "dev",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="e.g. 32,1")] = "32,1",
    bf16: Bf16Opt = False,
    json_path: JsonOpt = None,
) -> None:
    """Throughput, latency, parameters and size of models measured in one run."""
    from layergraft import api
    from layergraft.pipeline.bench import format_speed_table
    from layergraft.pipeline.evaluation import save_results

    rows = api.bench(models, task, split=split, batch_sizes=_split_list(batch_sizes, int),
                     bf16=bf16)
    typer.echo(format_speed_table(rows))
    if json_path is not None:
        save_results(rows, json_path)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo"),
    layers: Annotated[int, typer.Option("--layers", help="Student depth.")] = 2,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Distillation budget (default: a quarter of the benchmark's full "
        "3 epochs).")] = None,
) -> None:
    """Offline MiniLM on movie-sentiment: teacher once, then graft vs the best layer drop."""
    from layergraft.pipeline.demo import run_demo

    rows = run_demo(out, layers=layers, **({"budget": budget} if budget else {}))
    for row in rows:
        if row["split"] == "test" and row["metric"] == "accuracy":
            typer.echo(f"{row['method']:>15} {row['strategy']:>8}: test accuracy "
                       f"{100 * row['value']:.2f} ({100 * row['retention']:.1f}% of the "
                       f"teacher's {100 * row['teacher_value']:.2f}), agreement "
                       f"{100 * row['agreement']:.1f}%")
    typer.echo(f"report: {out / 'compare' / 'report.md'} (and report.html)")


def _print_scores(task: str, by_split: dict) -> None:
    for split, metrics in by_split.items():
        scores = ", ".join(f"{name} {100 * value:.2f}" for name, value in metrics.items())
        typer.echo(f"{task} {split}: {scores}")


def _headline(record: dict) -> str:
    metric = record["primary_metric"]
    split = "test" if "test" in record else "dev"
    result = record[split]
    return (f"{split} {metric} {100 * result['metrics'][metric]:.2f} "
            f"(teacher {100 * result['teacher'][metric]:.2f}, agreement "
            f"{100 * result['agreement']:.1f}%)")


def main() -> None:
    """Console entry point: user errors become one line and exit status 2."""
    try:
        app()
    except LayergraftError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
