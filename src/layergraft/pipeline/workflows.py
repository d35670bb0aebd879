"""Path-level workflows behind `layergraft analyze` and `layergraft graft`.

They load a model folder (or hub name) and a task, run the pure pieces (analysis, surgery)
and save the results atomically; `layergraft.analyze` and `layergraft.graft` (and so the CLI)
are thin layers over them.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.errors import LayergraftError
from layergraft.models import check_output_dir, load_for_task, load_trained, save_model
from layergraft.objectives.task.repair import (  # noqa: F401 (also imported from here)
    recalibrate_after_surgery,
    refit_after_surgery,
)
from layergraft.report.model_card import write_card
from layergraft.runtime import Runtime
from layergraft.scoring.analysis import (
    Analysis,
    AnalysisSettings,
    load_analysis,
    measure,
    save_analysis,
)
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.methods import NEEDS_SCORES, NEEDS_SIMILARITY, GraftOptions
from layergraft.surgery.plan import Plan, check_target_depth
from layergraft.surgery.width import check_heads

if TYPE_CHECKING:
    from layergraft.data.tasks import Task, TaskSource


def analyze_path(model_path: str, task_source: TaskSource, out_dir: str | os.PathLike,
                 settings: AnalysisSettings = AnalysisSettings(), *,
                 runtime: Runtime | None = None,
                 allow_untrained_head: bool = False) -> Analysis:
    """Measure importance and similarity of a model on a task and save them to `out_dir`.
    Whatever the loss or importance, scores of a head that was never trained say nothing
    about the task, so such a model is refused unless `allow_untrained_head`."""
    runtime = runtime or Runtime.resolve()
    task = task_source.load()
    model, tokenizer = load_for_task(model_path, task, allow_untrained_head=allow_untrained_head)
    analysis = measure(model.to(runtime.device), tokenizer, task, settings,
                       precision=runtime.precision)
    save_analysis(analysis, out_dir)
    return analysis


def graft_path(
    model_path: str,
    out_dir: str | os.PathLike,
    *,
    layers: int | None = None,
    pairs: str | None = None,
    method: str = "graft",
    task_source: TaskSource | None = None,
    analysis_dir: str | os.PathLike | None = None,
    settings: AnalysisSettings = AnalysisSettings(),
    options: GraftOptions | None = None,
    seed: int = 0,
    refit_samples: int = 0,
    overwrite: bool = False,
    runtime: Runtime | None = None,
    allow_untrained_head: bool = False,
) -> Path:
    """Graft (or drop / average) a saved model down to `layers` and save the student.

    Methods that need importance or similarity get them from `analysis_dir` (a folder
    written by `analyze`) or measure them on `task_source`. A model that is itself a
    graft keeps its manifest, so chained grafts trace back to the original teacher.
    `refit_samples` > 0 then refits the new layers' FFN output projections to the input
    model's hidden states on that many examples of the task (`layergraft.surgery.refit`).
    Measuring and refitting run on `runtime`'s device (default: resolved from the hardware).
    A model whose classification head was never trained is refused unless
    `allow_untrained_head` (it needs `layergraft finetune` first).
    """
    runtime = runtime or Runtime.resolve()
    check_output_dir(out_dir, overwrite)
    options = options or GraftOptions()
    if refit_samples and task_source is None:
        raise LayergraftError("--refit needs data to fit on: give --task (a task name or a "
                              "data file)")
    options.check_calibration(method, task_source is not None)
    options.check_method(method)
    if task_source is not None:
        task = task_source.load()
        model, tokenizer = load_for_task(model_path, task,
                                         allow_untrained_head=allow_untrained_head)
    else:
        task = None
        model, tokenizer = load_trained(model_path, allow_untrained_head=allow_untrained_head)
    check_heads(model.config, options.heads)  # before measuring anything
    model.to(runtime.device)
    plan = Plan.from_spans(model.config.num_hidden_layers, pairs) if pairs else None
    if plan is None and layers is not None:  # before measuring anything
        check_target_depth(model.config.num_hidden_layers, layers)
    analysis = _analysis_for(model, tokenizer, method, task, analysis_dir, settings,
                             runtime.precision)
    scores = analysis.graft_inputs() if analysis is not None else {}
    student, manifest = graft_model(
        model, layers=layers, plan=plan, method=method, options=options, seed=seed,
        manifest=Manifest.load(model_path) if Path(model_path).is_dir() else None,
        judge=_judge(model, tokenizer, task, options, settings.max_length), **scores,
    )
    if refit_samples:
        refit_after_surgery(student, model, manifest.steps[-1], task, tokenizer,
                            replace(settings, samples=refit_samples))
    saved = save_model(student, tokenizer, out_dir, manifest=manifest, overwrite=overwrite)
    write_card(saved, manifest.to_dict())
    return saved


def _judge(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task | None,
           options: GraftOptions, max_length: int):
    """The span-error judge of `--choose-by reconstruction` on the task's training texts."""
    if not options.by_reconstruction or task is None:
        return None
    from layergraft.data.encoding import encode
    from layergraft.training.calibrate import ReconstructionJudge, calibration_texts

    train = encode(task, tokenizer, max_length, splits=["train"])["train"]
    return ReconstructionJudge(model, calibration_texts(train, options.calibration), tokenizer)


def _analysis_for(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: str,
                  task: Task | None, analysis_dir: str | os.PathLike | None,
                  settings: AnalysisSettings, precision: str) -> Analysis | None:
    """Load or measure the analysis a method needs; None when it needs none and has none."""
    if analysis_dir is not None:
        analysis = load_analysis(analysis_dir)
        analysis.check_fits(model, analysis_dir)
        return analysis
    if task is None:
        if method in NEEDS_SCORES or method in NEEDS_SIMILARITY:
            raise LayergraftError(
                f"method '{method}' needs data to measure the model on: give --task "
                "(a task name or a data file) or --analysis DIR from `layergraft analyze`"
            )
        return None
    return measure(model, tokenizer, task, settings, precision=precision)
