"""The `layergraft` command: each subcommand parses flags and calls one public function.

Heavy imports (torch, transformers, datasets) happen inside the handlers so `--help`
is instant. A LayergraftError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
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
TextColumnOpt = Annotated[str | None, typer.Option(
    "--text-column", help="Text column of a local file.")]
PairColumnOpt = Annotated[str | None, typer.Option(
    "--pair-column", help="Second-text column of a local file.")]
LabelColumnOpt = Annotated[str | None, typer.Option(
    "--label-column", help="Label column of a local file.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")]
RegressionOpt = Annotated[bool | None, typer.Option(
    "--regression/--classification",
    help="Whether a local file's labels are scores or classes (default: inferred).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
SamplesOpt = Annotated[int, typer.Option(
    "--samples", help="Training examples used to measure importance and similarity.")]
ImportanceOpt = Annotated[str, typer.Option(
    "--importance", help="Importance score: michel, fisher, weight or activation.")]
LossOpt = Annotated[str, typer.Option(
    "--loss", help="Loss for gradient scores: task (gold labels) or kl (model's own "
    "predictions; no labels needed).")]
NormalizeOpt = Annotated[bool, typer.Option(
    "--normalize/--raw", help="Divide each layer's scores by their L2 norm.")]


def _task_source(task: str, text_column: str | None, pair_column: str | None,
                 label_column: str | None, regression: bool | None):
    """The task as flags describe it. A lone data file is always split with seed 0, so every
    command (and every training seed) sees the same train/dev/test rows."""
    from layergraft.data.tasks import TaskSource

    return TaskSource(task, text_column=text_column, pair_column=pair_column,
                      label_column=label_column, regression=regression)


@app.command()
def analyze(
    model: ModelArg,
    task: TaskOpt,
    out: OutOpt,
    samples: SamplesOpt = 2000,
    importance: ImportanceOpt = "michel",
    loss: LossOpt = "task",
    normalize: NormalizeOpt = False,
    seed: SeedOpt = 0,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Measure head/neuron importance and layer similarity; write scores, JSON and plots."""
    from layergraft.pipeline.workflows import analyze_path
    from layergraft.scoring.analysis import AnalysisSettings

    settings = AnalysisSettings(samples=samples, importance=importance, loss=loss,
                                normalize=normalize, seed=seed)
    source = _task_source(task, text_column, pair_column, label_column, regression)
    analysis = analyze_path(model, source, out, settings)
    cosine = ", ".join(f"{v:.3f}" for v in analysis.adjacent_cosine.tolist())
    typer.echo(f"adjacent cosine (layer input vs output): {cosine}")
    typer.echo(f"wrote scores, similarity and plots to {out}")


@app.command()
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
        "--analysis", help="Reuse the scores of `layergraft analyze` from this folder.")] = None,
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
    refit: Annotated[int, typer.Option(
        "--refit", help="Then refit the new layers' FFN output projections to the input "
        "model by least squares on this many task examples (0: off).")] = 0,
    samples: SamplesOpt = 2000,
    importance: ImportanceOpt = "michel",
    loss: LossOpt = "task",
    normalize: NormalizeOpt = False,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Surgery only: merge adjacent layers into a smaller model of standard shape."""
    from layergraft.pipeline.workflows import graft_path
    from layergraft.scoring.analysis import AnalysisSettings
    from layergraft.surgery.methods import GraftOptions

    source = (_task_source(task, text_column, pair_column, label_column, regression)
              if task else None)
    path = graft_path(
        model, out, layers=layers, pairs=pairs, method=method, task_source=source,
        analysis_dir=analysis, seed=seed, refit_samples=refit, overwrite=overwrite,
        settings=AnalysisSettings(samples=samples, importance=importance, loss=loss, seed=seed),
        options=GraftOptions(bias=bias, norm=norm, normalize_scores=normalize, quota=quota,
                             max_sources=max_sources),
    )
    typer.echo(f"saved the grafted model to {path}")


BudgetOpt = Annotated[str, typer.Option(
    "--budget", help="Training budget shared by every method and strategy, e.g. '3 epochs' "
    "or '500 steps'.")]
Bf16Opt = Annotated[bool, typer.Option(
    "--bf16", help="bfloat16 autocast (about 2.5x faster on recent CPUs).")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="Distillation T.")]
HiddenWeightOpt = Annotated[float, typer.Option(
    "--hidden-weight", help="Weight of the hidden-state MSE to the teacher (0: off).")]
TaskWeightOpt = Annotated[float, typer.Option(
    "--task-weight", help="Weight of the gold-label loss during distillation.")]
StudentLrOpt = Annotated[float | None, typer.Option(
    "--lr", help="Peak learning rate of the student (default: the package's measured "
    "STUDENT_LEARNING_RATE, 4e-4).")]


GroupByLengthOpt = Annotated[bool, typer.Option(
    "--group-by-length", help="Batch examples of similar length: less padding, faster "
    "training on CPU (changes which examples share a batch).")]


def _student_training(learning_rate: float | None, group_by_length: bool):
    """compress's training settings from --lr and --group-by-length."""
    from layergraft.training.train import student_training

    return student_training(learning_rate, group_by_length=group_by_length)


def _split_list(value: str, cast=str) -> list:
    return [cast(part.strip()) for part in value.split(",") if part.strip()]


@app.command()
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
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Make a teacher: fine-tune a pretrained encoder on a task (resumes if interrupted)."""
    from layergraft.pipeline.finetune import finetune as run_finetune
    from layergraft.training.train import TrainConfig

    config = TrainConfig(output_dir="", epochs=epochs, max_steps=max_steps,
                         learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                         bf16=bf16, group_by_length=group_by_length)
    loaded = _task_source(task, text_column, pair_column, label_column, regression).load()
    record = run_finetune(_resolve(model), loaded, str(out), config, overwrite=overwrite)
    _print_scores(record["task"], {k: record[k] for k in ("dev", "test") if k in record})
    typer.echo(f"saved the fine-tuned model to {out} ({record['train_seconds']} s of training)")


@app.command()
def evaluate(
    model: ModelArg,
    task: TaskOpt,
    split: Annotated[list[str] | None, typer.Option(
        "--split", help="Split(s) to score (default: the task's evaluation splits); 'ood' "
        "adds the task's out-of-domain sets.")] = None,
    json_path: JsonOpt = None,
    bf16: Bf16Opt = False,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Score a model on a task: a table on screen and, with --json, a JSON record."""
    from layergraft.models import load_for_task
    from layergraft.pipeline.evaluation import evaluate_model, format_table, save_results

    loaded = _task_source(task, text_column, pair_column, label_column, regression).load()
    classifier, tokenizer = load_for_task(model, loaded)
    split = split or list(loaded.spec.eval_splits)
    targets = [(loaded, name) for name in split if name != "ood"]
    if "ood" in split:
        targets += [(other, "test") for other in loaded.ood().values()]
    records = [evaluate_model(classifier, tokenizer, target, name, bf16=bf16)
               for target, name in targets]
    typer.echo(format_table(records))
    if json_path is not None:
        save_results(records if len(records) > 1 else records[0], json_path)


@app.command()
def compress(
    teacher: ModelArg,
    task: TaskOpt,
    layers: Annotated[int, typer.Option("--layers", help="Depth of the student.")],
    out: OutOpt,
    method: Annotated[str, typer.Option("--method", help="Surgery method.")] = "graft",
    strategy: Annotated[str, typer.Option(
        "--strategy", help="none, finetune, distill or progressive.")] = "distill",
    budget: BudgetOpt = "3 epochs",
    seed: SeedOpt = 0,
    bf16: Bf16Opt = False,
    temperature: TemperatureOpt = 2.0,
    hidden_weight: HiddenWeightOpt = 0.0,
    task_weight: TaskWeightOpt = 0.0,
    learning_rate: StudentLrOpt = None,
    group_by_length: GroupByLengthOpt = False,
    overwrite: OverwriteOpt = False,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Surgery + training + evaluation + speed: a student, its manifest and results.json."""
    from layergraft.pipeline.compress import compress as run_compress
    from layergraft.training.distill import DistillConfig

    source = _task_source(task, text_column, pair_column, label_column, regression)
    record = run_compress(
        teacher, source, layers=layers, out_dir=out, method=method, strategy=strategy,
        budget=budget, seed=seed, bf16=bf16, overwrite=overwrite,
        training=_student_training(learning_rate, group_by_length),
        distill=DistillConfig(temperature=temperature, hidden_weight=hidden_weight,
                              task_weight=task_weight))
    _print_scores(record["task"], {s: record[s]["metrics"] for s in ("dev", "test")
                                   if s in record})
    typer.echo(f"saved the {layers}-layer student and results.json to {out}")


@app.command()
def compare(
    teacher: ModelArg,
    task: TaskOpt,
    out: OutOpt,
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
    temperature: TemperatureOpt = 2.0,
    hidden_weight: HiddenWeightOpt = 0.0,
    task_weight: TaskWeightOpt = 0.0,
    learning_rate: StudentLrOpt = None,
    group_by_length: GroupByLengthOpt = False,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Every method x strategy x depth under one budget: results.csv/json and a report."""
    from layergraft.pipeline.compare import plan_runs, run_comparison
    from layergraft.training.distill import DistillConfig

    runs = plan_runs(_split_list(layers, int), _split_list(methods), _split_list(strategies),
                     _split_list(graft_strategies), _split_list(seeds, int))
    source = _task_source(task, text_column, pair_column, label_column, regression)
    run_comparison(
        teacher, source, out, runs, budget=budget, bf16=bf16,
        training=_student_training(learning_rate, group_by_length),
        distill=DistillConfig(temperature=temperature, hidden_weight=hidden_weight,
                              task_weight=task_weight),
        on_result=lambda key, record: typer.echo(f"done {key.name}: " + _headline(record)))
    typer.echo(f"wrote results.csv, results.json and report.md/.html to {out}")


@app.command()
def bench(
    models: Annotated[list[str], typer.Argument(
        help="Model folders; the first is the reference of the speed ratios.")],
    task: TaskOpt,
    split: Annotated[str, typer.Option("--split", help="Split whose lengths are used.")]
    = "dev",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="e.g. 32,1")] = "32,1",
    bf16: Bf16Opt = False,
    json_path: JsonOpt = None,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
    regression: RegressionOpt = None,
) -> None:
    """Throughput, latency, parameters and size of models measured in one run."""
    from layergraft.pipeline.bench import bench_models, format_speed_table
    from layergraft.pipeline.evaluation import save_results

    loaded = _task_source(task, text_column, pair_column, label_column, regression).load()
    rows = bench_models([_resolve(m) for m in models], loaded, split=split,
                        batch_sizes=_split_list(batch_sizes, int), bf16=bf16)
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


def _resolve(model: str) -> str:
    from layergraft.models import resolve_model

    return resolve_model(model)


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
