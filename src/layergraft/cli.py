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


def _task_source(task: str, seed: int, text_column: str | None, pair_column: str | None,
                 label_column: str | None):
    from layergraft.workflows import TaskSource

    return TaskSource(task, text_column=text_column, pair_column=pair_column,
                      label_column=label_column, seed=seed)


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
) -> None:
    """Measure head/neuron importance and layer similarity; write scores, JSON and plots."""
    from layergraft.workflows import AnalysisSettings, analyze_path

    settings = AnalysisSettings(samples=samples, importance=importance, loss=loss,
                                normalize=normalize, seed=seed)
    analysis = analyze_path(model, _task_source(task, seed, text_column, pair_column,
                                                label_column), out, settings)
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
        "--bias", help="Output biases of a grafted layer: sum, later, earlier, mean.")] = "sum",
    norm: Annotated[str, typer.Option(
        "--norm", help="LayerNorms of a grafted layer: mean, later, earlier.")] = "mean",
    quota: Annotated[str, typer.Option(
        "--quota", help="free (best units overall) or equal (same share from each layer).")]
    = "free",
    samples: SamplesOpt = 2000,
    importance: ImportanceOpt = "michel",
    loss: LossOpt = "task",
    normalize: NormalizeOpt = False,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    text_column: TextColumnOpt = None,
    pair_column: PairColumnOpt = None,
    label_column: LabelColumnOpt = None,
) -> None:
    """Surgery only: merge adjacent layers into a smaller model of standard shape."""
    from layergraft.methods import GraftOptions
    from layergraft.workflows import AnalysisSettings, graft_path

    source = _task_source(task, seed, text_column, pair_column, label_column) if task else None
    path = graft_path(
        model, out, layers=layers, pairs=pairs, method=method, task_source=source,
        analysis_dir=analysis, seed=seed, overwrite=overwrite,
        settings=AnalysisSettings(samples=samples, importance=importance, loss=loss, seed=seed),
        options=GraftOptions(bias=bias, norm=norm, normalize_scores=normalize, quota=quota),
    )
    typer.echo(f"saved the grafted model to {path}")


def main() -> None:
    """Console entry point: user errors become one line and exit status 2."""
    try:
        app()
    except LayergraftError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
