"""Follow-ups of a classifier's surgery on the task's analysis sample: refit the new layers'
FFN outputs by least squares (`layergraft.surgery.refit`) and match their output statistics
to the source's (`layergraft.surgery.recalibrate`); each recorded in the graft step."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.tasks import Task
from layergraft.scoring.analysis import AnalysisSettings, analysis_batches
from layergraft.surgery.manifest import GraftStep
from layergraft.surgery.plan import Plan


def refit_after_surgery(student: PreTrainedModel, source: PreTrainedModel, step: GraftStep,
                        task: Task, tokenizer: PreTrainedTokenizerBase,
                        settings: AnalysisSettings) -> None:
    """Refit the step's new layers on the analysis sample; record how in the step."""
    from layergraft.surgery.refit import REFIT_RIDGE, refit_outputs

    report = refit_outputs(student, source, step.span_ends(),
                           analysis_batches(task, tokenizer, settings), ridge=REFIT_RIDGE,
                           progress=settings.progress)
    step.refit = {"samples": settings.samples, "split": settings.split, "seed": settings.seed,
                  "ridge": REFIT_RIDGE, "layers": report}


def recalibrate_after_surgery(student: PreTrainedModel, source: PreTrainedModel,
                              step: GraftStep, task: Task, tokenizer: PreTrainedTokenizerBase,
                              settings: AnalysisSettings) -> None:
    """Match the output statistics of every layer that stands for a span of two or more
    source layers to the source's state at the span's end (REPAIR); record how in the step."""
    from layergraft.surgery.recalibrate import recalibrate_norms

    groups = Plan.from_dict(step.plan).groups if step.plan else [r.sources for r in step.recipes]
    repaired = [i for i, group in enumerate(groups) if len(group) > 1]
    report = recalibrate_norms(student, source, step.span_ends(), repaired,
                               analysis_batches(task, tokenizer, settings),
                               progress=settings.progress)
    step.recalibrated = {"samples": settings.samples, "split": settings.split,
                         "seed": settings.seed, "layers": report}


