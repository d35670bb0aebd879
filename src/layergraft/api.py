"""The public API: every command `layergraft X` is `layergraft.X(...)` in Python.

Each function is a thin layer over the pipeline (`load` over `layergraft.models`): it takes
what the command takes, as arguments, and returns what the command reports. The CLI parses
flags and calls these; the functions they call stay public for finer control. Heavy imports
happen inside the functions, so `import layergraft` stays fast.

`task` is a registered task name, a CSV / TSV / JSONL file or folder, or a
`layergraft.data.tasks.TaskSource` (a name or path with the column options of a local file).
`model` is a model folder, a hub name, or 'minilm' for the built-in offline model.
`device` ("auto", "cpu", "cuda", "cuda:N", "mps") and `precision` ("auto", "fp32", "bf16",
"fp16") say where and how models run; "auto" asks the hardware (`layergraft.runtime`: bf16
autocast only where it is native, so never on a CPU that would emulate it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from layergraft.data.tasks import TaskSource
    from layergraft.scoring.analysis import Analysis, AnalysisSettings
    from layergraft.surgery.methods import GraftOptions

__all__ = ["analyze", "graft", "finetune", "evaluate", "compress", "compare", "bench", "export",
           "load"]


def analyze(model: str, task: str | TaskSource, *, out: str | os.PathLike,
            device: str = "auto", precision: str = "auto",
            allow_untrained_head: bool = False, **settings) -> Analysis:
    """`layergraft analyze`: head / neuron importance and layer similarity of `model` on a
    sample of `task`, saved to `out` (scores, JSON, plots). `settings` are fields of
    `AnalysisSettings`: samples, importance, loss, normalize (store L2-normalised scores),
    seed, ... A model whose classification head was never trained is refused unless
    `allow_untrained_head` (so are graft, evaluate, compress and compare)."""
    from layergraft.data.tasks import as_source
    from layergraft.pipeline.workflows import analyze_path
    from layergraft.runtime import Runtime
    from layergraft.scoring.analysis import AnalysisSettings

    return analyze_path(model, as_source(task), out, AnalysisSettings(**settings),
                        runtime=Runtime.resolve(device, precision),
                        allow_untrained_head=allow_untrained_head)


def graft(model: str, *, out: str | os.PathLike, layers: int | None = None,
          pairs: str | None = None, method: str = "graft", task: str | TaskSource | None = None,
          analysis: str | os.PathLike | None = None, options: GraftOptions | None = None,
          settings: AnalysisSettings | None = None, refit: int = 0, seed: int = 0,
          overwrite: bool = False, device: str = "auto", precision: str = "auto",
          allow_untrained_head: bool = False) -> Path:
    """`layergraft graft`: surgery only. Merge adjacent layers of `model` down to `layers` (or
    the spans `pairs`, e.g. "0-1,2-3") by `method` and save the student and its manifest to
    `out`. Methods that need scores read them from `analysis` (a folder of `analyze`) or
    measure them on `task` (with `settings`); `refit` > 0 then refits the new layers on that
    many task examples. `options` shape the new layers, their FFN width too:
    `GraftOptions(ffn_size=0.5)` (or a count; `ffn_size_all=True`), as compress's
    `graft_options` do. Returns the saved folder."""
    from layergraft.data.tasks import as_source
    from layergraft.pipeline.workflows import graft_path
    from layergraft.runtime import Runtime
    from layergraft.scoring.analysis import AnalysisSettings

    return graft_path(model, out, layers=layers, pairs=pairs, method=method,
                      task_source=as_source(task) if task is not None else None,
                      analysis_dir=analysis, settings=settings or AnalysisSettings(),
                      options=options, seed=seed, refit_samples=refit, overwrite=overwrite,
                      runtime=Runtime.resolve(device, precision),
                      allow_untrained_head=allow_untrained_head)


def finetune(model: str, task: str | TaskSource, *, out: str | os.PathLike,
             overwrite: bool = False, **config) -> dict:
    """`layergraft finetune`: make a teacher, `model` with a new head trained on `task` and saved
    to `out` (resumes if interrupted). `config` are fields of `TrainConfig`: epochs,
    max_steps, learning_rate, batch_size, seed, precision, device, group_by_length, ... Returns
    the record
    also written to `out/finetune_results.json`."""
    from layergraft.data.tasks import as_source
    from layergraft.models import resolve_model
    from layergraft.pipeline.finetune import finetune as run_finetune
    from layergraft.training.train import TrainConfig

    return run_finetune(resolve_model(model), as_source(task).load(), str(out),
                        TrainConfig(output_dir="", **config), overwrite=overwrite)


def evaluate(model: str, task: str | TaskSource | None = None, *,
             splits: Sequence[str] | None = None, device: str = "auto", precision: str = "auto",
             allow_untrained_head: bool = False, objective: str = "task",
             teacher: str | None = None, eval_tasks: Sequence[str] | None = None,
             texts: str | os.PathLike | None = None) -> list[dict]:
    """`layergraft evaluate`: one record per split of `task` (default: its evaluation splits;
    'ood' adds the task's out-of-domain sets) with the metrics, model size and versions.

    `objective="embedding"` evaluates a saved sentence-transformers model instead, against
    `teacher` (default: the one its compress run names): one record with the neighbour
    agreement, the frozen-embedding probes on `eval_tasks` (default movie-sentiment and
    movie-rating, or `task`) side by side with the teacher's, and the mean cosine on `texts`
    (a file), by `layergraft.embeddings.fidelity.evaluate_folder`."""
    from layergraft.objectives.base import get_objective

    return get_objective(objective).evaluate(
        model, task, splits=splits, device=device, precision=precision,
        allow_untrained_head=allow_untrained_head, teacher=teacher, eval_tasks=eval_tasks,
        texts=texts)


def compress(teacher: str, task: str | TaskSource | None = None, *, layers: int | None = None,
             out: str | os.PathLike, objective: str = "task",
             texts: str | os.PathLike | None = None, speedup: float | None = None,
             method: str | None = None, **options) -> dict:
    """`layergraft compress`: surgery, training by one strategy, evaluation against the teacher
    and speed; the student, its manifest and results.json are saved to `out` (resumable).
    `method` defaults to the objective's `default_method`: for a classifier "auto", the best
    on dev of graft and the strongest drops, each at its own rate (`compress_auto`); else
    "graft". `options` are those of `layergraft.objectives.task.TaskObjective.run`: strategy,
    budget, seed, precision, device, distill, graft_options, analysis, training, refit_samples,
    pairs, ood, speed, progressive_schedule ("per-stage" or "one": progressive's stages on
    one optimizer and learning-rate curve), overwrite, allow_untrained_head, recalibrate_samples,
    guard, ...; and those of `layergraft.pipeline.auto.compress_auto`: `learning_rate` (a
    number or "auto") and `plan` ("uniform", "intact:K", spans, or "auto"); `dry_run=True`
    runs nothing and returns the run's status ("done", "stale" or "to do").

    `objective` is what the model is for (`layergraft.objectives`): "embedding" compresses a
    sentence-transformers model instead (`teacher` a sentence-transformers folder, 'minilm'
    or 'mpnet'), trained on the teacher's embeddings of unlabeled `texts` (a file) or of
    `task`'s training texts: `layergraft.objectives.embedding.EmbeddingObjective.run` takes
    the options.

    `speedup=X` (instead of `layers`) chooses the depth and FFN width that run X times the
    teacher on this machine (`speedup_backend`, default torch-fp32; `speedup_threads`,
    default 1), probes up to three of them and trains the best:
    `layergraft.pipeline.speedup.compress_speedup`."""
    from layergraft.errors import LayergraftError
    from layergraft.objectives.base import get_objective
    from layergraft.pipeline.auto import compress_auto

    options["method"] = method or get_objective(objective).default_method
    if speedup is not None:
        from layergraft.pipeline.speedup import compress_speedup

        return compress_speedup(teacher, task, speedup=speedup, layers=layers, out_dir=out,
                                objective=objective,
                                **({"texts": texts} if texts is not None else {}), **options)
    if layers is None:
        raise LayergraftError("say how deep the student is: give --layers N, or --speedup X "
                              "to have the depth and FFN width chosen by speed")
    return compress_auto(teacher, task, layers=layers, out_dir=out, objective=objective,
                         **({"texts": texts} if texts is not None else {}), **options)


def compare(teacher: str, task: str | TaskSource | None, *, out: str | os.PathLike,
            layers: Sequence[int] = (3,), methods: Sequence[str] | None = None,
            strategies: Sequence[str] = ("distill",), graft_strategies: Sequence[str] | None = None,
            seeds: Sequence[int] = (0,), dry_run: bool = False, objective: str = "task",
            **options) -> list[dict]:
    """`layergraft compare`: every method with `strategies` plus graft with `graft_strategies`
    (default: all methods; graft with every strategy), per depth and seed, under one budget;
    writes results.csv / .json and report.md / .html to `out` and returns the rows. `options`
    go to every `compress` call (budget, precision, device, distill, training, ...) and
    `run_comparison` (title, on_result). `dry_run=True` runs nothing and returns one row per
    run with its status instead: "done", "stale" (finished with other settings) or "to do".

    `objective="embedding"` runs the grid with `compress(objective="embedding")` (training
    text: `texts=FILE` or `task`'s train texts) and writes results.json (rows, the teacher's
    first) and report.md (the objective's rows and report: `layergraft.objectives`)."""
    from layergraft.objectives.base import get_objective
    from layergraft.pipeline.compare import grid_status, plan_runs, run_comparison

    if graft_strategies is None:  # the objective's own (a classifier: every strategy)
        graft_strategies = get_objective(objective).graft_grid
    grid = {"methods": methods, "graft_strategies": graft_strategies}
    runs = plan_runs(layers, strategies=strategies, seeds=seeds,
                     **{name: value for name, value in grid.items() if value is not None})
    if dry_run:
        for reporting in ("title", "on_result"):
            options.pop(reporting, None)
        return grid_status(teacher, task, out, runs, objective=objective, **options)
    return run_comparison(teacher, task, out, runs, objective=objective, **options)


def bench(models: Sequence[str], task: str | TaskSource, *, split: str = "dev",
          batch_sizes: Sequence[int] = (32, 1), seq_lens: Sequence[int] = (),
          device: str = "auto", precision: str = "auto",
          backends: Sequence[str] | None = None, score: bool = True,
          score_split: str | None = None, out: str | os.PathLike | None = None,
          **options) -> list[dict]:
    """`layergraft bench`: throughput, latency, parameters and size of `models` measured in one
    run on the real lengths of a `task` split, then on batches of each fixed length in
    `seq_lens` (each record's `lengths`: "real" or the length); the first model is the
    reference of the speed ratios. `backends` (torch-fp32, torch-bf16, torch-int8, and the ONNX
    graphs onnx-[opt-]fp32 / int8 / int8-static of `layergraft.deploy.variants`; default
    PyTorch in the run's precision) times every model on each, all in the
    same run (each record's `backend`; torch-bf16 is skipped where bf16 is not native). With
    `score`, every (model, backend) is scored on `score_split` (default: test where labelled,
    else dev) with its retention vs the first model on the first backend. `out` receives
    bench.json, bench.csv, pareto.png and bench.md (and the onnx exports, in out/onnx).
    `options` go to `layergraft.pipeline.bench.measure_speed`."""
    from layergraft.data.tasks import as_source
    from layergraft.models import resolve_model
    from layergraft.pipeline.bench_quality import default_split
    from layergraft.pipeline.bench_run import bench_models
    from layergraft.report.bench_report import write_outputs

    loaded = as_source(task).load()
    rows = bench_models([resolve_model(m) for m in models], loaded, split=split,
                        batch_sizes=batch_sizes, seq_lens=seq_lens, device=device,
                        precision=precision, backends=backends,
                        score_split=(score_split or default_split(loaded)) if score else None,
                        cache_dir=Path(out) / "onnx" if out is not None else None, **options)
    if out is not None:
        write_outputs(rows, out)
    return rows


def load(model: str, num_labels: int | None = None
         ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier (a folder, a hub name or 'minilm') and its tokenizer, in eval
    mode; `num_labels` sizes a new head for a base encoder that has none yet."""
    from layergraft.models import load_classifier

    return load_classifier(model, num_labels)


def export(model: str, *, out: str | os.PathLike, quantize: str | Sequence[str] | None = None,
           optimize: bool = False, task: str | TaskSource | None = None,
           split: str | None = None, overwrite: bool = False,
           allow_untrained_head: bool = False, format: str = "onnx",
           gguf_type: str | None = None) -> dict:
    """`layergraft export`: `model` as ONNX in `out` (model.onnx; model.int8.onnx with
    `quantize="int8"`, ONNX Runtime dynamic int8; model.int8-static.onnx with "int8-static",
    QDQ calibrated on `task`'s training texts; both with "int8,int8-static"; with `optimize`,
    each also fused by ONNX Runtime's transformer optimizer, model.opt*.onnx, named by
    `layergraft.deploy.variants`) with its tokenizer, config and graft
    manifest, verified against PyTorch: on `task`'s dev split (or `split`) when given, else on
    built-in sentences. Returns the report, also written to `out/export_report.json`; a failed
    check raises LayergraftError after the report is written. `format="gguf"`: a decoder LLM
    as out/model.gguf for llama.cpp and ollama instead (`gguf_type` f32, f16 (default) or
    q8_0), verified by reloading it with transformers' GGUF loader."""
    from layergraft.data.tasks import as_source
    from layergraft.deploy.export import export_model
    from layergraft.models import resolve_model

    loaded = as_source(task).load() if task is not None else None
    return export_model(resolve_model(model), out, quantize=quantize, optimize=optimize,
                        task=loaded, split=split,
                        overwrite=overwrite, allow_untrained_head=allow_untrained_head,
                        format=format, gguf_type=gguf_type)
