"""`layergraft compress`: surgery, training by one of four strategies, evaluation, speed.

Strategies (DESIGN section 6): `none` (surgery only), `finetune` (task labels),
`distill` (one-shot surgery, then distillation from the teacher) and `progressive`
(one pair at a time, most similar first, re-analysed and briefly distilled after each
merge). Every method and strategy trains through `train_stage` with the same
`Budget` in optimizer steps, so comparisons are fair. Runs are resumable (`runs`): a
finished `results.json` with the same settings is returned as is, and training resumes from
its checkpoints. The student is then scored against its teacher and timed (`assess`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from accelerate import PartialState
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.encoding import encode
from layergraft.data.tasks import Task, TaskSource, as_source
from layergraft.errors import LayergraftError
from layergraft.models import (
    load_for_task,
    resolve_model,
    save_model,
    untrained_head,
)
from layergraft.pipeline.assess import (
    evaluation_sets,
    score_student,
    teacher_predictions,
    time_student,
)
from layergraft.pipeline.context import RunContext
from layergraft.pipeline.runs import (
    CHECKPOINTS,
    FORMAT,
    PREDICTIONS_NAME,
    RESULTS_NAME,
    WORK_FOLDERS,
    finished_results,
    run_status,
    start_fresh_or_resume,
)
from layergraft.pipeline.strategies import (
    PER_STAGE,
    UNTRAINED,
    check_request,
    normalized_spans,
    steps_after_heal,
)
from layergraft.report.model_card import write_card
from layergraft.runtime import Runtime
from layergraft.scoring.analysis import (
    AnalysisSettings,
)
from layergraft.surgery.arch import num_layers
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.methods import TAKES_OPTIONS, GraftOptions
from layergraft.surgery.plan import Plan
from layergraft.training.budget import Budget
from layergraft.training.distill import (
    DistillConfig,
    model_fingerprint,
)
from layergraft.training.guard import CollapseGuard
from layergraft.training.heal import HealConfig
from layergraft.training.parallel import process_state
from layergraft.training.replace import REPLACE
from layergraft.training.train import TrainConfig, student_training
from layergraft.utils import (
    cache_root,
    content_fingerprint,
    num_parameters,
    versions,
    write_json_atomic,
)


def compress(
    teacher_path: str,
    task: str | TaskSource,
    *,
    layers: int,
    out_dir: str | os.PathLike,
    method: str = "graft",
    strategy: str = "distill",
    budget: Budget | str = "3 epochs",
    seed: int = 0,
    precision: str = "auto",
    device: str = "auto",
    distill: DistillConfig | None = None,
    graft_options: GraftOptions | None = None,
    analysis: AnalysisSettings | None = None,
    training: TrainConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    speed: bool = True,
    ood: bool = True,
    progress: bool = True,
    refit_samples: int = 0,
    heal: HealConfig | None = None,
    pairs: str | None = None,
    overwrite: bool = False,
    replace_other_runs: bool = False,
    dry_run: bool = False,
    allow_untrained_head: bool = False,
    progressive_schedule: str = PER_STAGE,
    recalibrate_samples: int = 0,
    guard: CollapseGuard | None = None,
) -> dict:
    """Compress `teacher_path` to `layers` layers on `task`; save the student and results.

    `training` supplies the optimiser settings (default: `student_training()`); its
    `batch_size` is the global batch (divided among data-parallel processes) and its own
    length fields are replaced by `budget`. Importance/similarity of the teacher and its
    outputs are cached under `cache_dir` (default $LAYERGRAFT_CACHE or ~/.cache/layergraft)
    and shared by runs.
    Returns the results record, also written to `out_dir/results.json`.
    `refit_samples` > 0 refits each surgery's new layers by least squares on that many
    examples of the analysis split before training (`layergraft.surgery.refit`). `ood=False` skips
    the task's out-of-domain sets (dev and test only: a quick look, as in the demo).
    `heal` (`layergraft.training.heal`) heals every new layer on cached teacher states right
    after surgery; its cost is charged against `budget` (strategy `heal`: healing alone).
    `pairs` (spans that merge, e.g. "0-1,2-3") is the plan of a one-shot surgery instead of
    the method's own (not for progressive, nor for the drop-* methods).
    `replace_other_runs` lets a run replace an earlier compress run of other settings in
    `out_dir` (a suite rerun after a default changed) but still no other model.
    `precision` and `device` are resolved once (`layergraft.runtime`); the run records and is
    identified by the precision it actually used, and by the content of the teacher and data
    (a teacher re-trained into the same folder makes a finished run stale, never returned).
    `dry_run` loads and runs nothing: it returns `{"status": "done" | "stale" | "to do",
    "out": ..., "settings": ...}`, what a call would do with `out_dir` (`runs.run_status`).
    A teacher whose classification head was never trained is refused unless
    `allow_untrained_head` (it needs `layergraft finetune` first); a dry run uses no head,
    so any encoder can stand in for a teacher there (a suite checking its settings).
    `progressive_schedule` "one" trains progressive's stages on one optimizer and one
    learning-rate curve over the whole budget instead of one of each per stage
    (`layergraft.training.schedule`); it is part of the run's settings.
    `recalibrate_samples` > 0 matches each new layer's output statistics to the teacher's
    at its span end on that many examples (`layergraft.surgery.recalibrate`) after surgery.
    `guard` (`layergraft.training.guard`; default: none) retrains a stage that collapsed
    from its start at half the rate; its restarts are in the results.
    """
    heal = heal or HealConfig()
    check_request(method, strategy, pairs, heal, progressive_schedule, graft_options)
    if not dry_run:
        untrained_head(teacher_path, allow_untrained_head)  # refused before anything else
    source = as_source(task)
    run = _Run(teacher_path=str(teacher_path), source=source, layers=int(layers), method=method,
               strategy=strategy, budget=Budget.parse(budget), seed=seed,
               runtime=Runtime.resolve(device, precision),
               distill=distill or DistillConfig(), options=graft_options or GraftOptions(),
               analysis=replace(analysis or AnalysisSettings(), progress=progress),
               training=training or student_training(), out=Path(out_dir),
               cache=cache_root(cache_dir), speed=speed, ood=ood, progress=progress,
               refit_samples=refit_samples, heal=heal, pairs=normalized_spans(pairs),
               allow_untrained_head=allow_untrained_head,
               progressive_schedule=progressive_schedule,
               recalibrate_samples=recalibrate_samples, guard=guard or CollapseGuard(retries=0))
    if dry_run:
        return {"status": run_status(run), "out": str(run.out), "settings": run.settings()}
    state = process_state(run.runtime)
    finished = finished_results(run, overwrite)
    if finished is not None:
        return finished
    task = run.source.load()  # bad data or weights are refused before anything is written
    teacher, tokenizer = load_for_task(run.teacher_path, task,
                                       allow_untrained_head=allow_untrained_head)
    if state.is_main_process:
        start_fresh_or_resume(run, overwrite, replace_other_runs)
    state.wait_for_everyone()
    return run.execute(state, task, teacher, tokenizer)



# Training settings at these values are left out of a run's identity, so that runs made
# before the option existed stay valid.
NEUTRAL_TRAINING = {("group_by_length", False), ("inherited_learning_rate", None)}


@dataclass
class _Run:
    """One compress run: what identifies it (`settings`, compared by `runs`) and how it
    executes (surgery, the strategy's training, evaluation, speed, saving)."""

    teacher_path: str
    source: TaskSource
    layers: int
    method: str
    strategy: str
    budget: Budget
    seed: int
    runtime: Runtime
    distill: DistillConfig
    options: GraftOptions
    analysis: AnalysisSettings
    training: TrainConfig
    out: Path
    cache: Path
    speed: bool
    ood: bool
    progress: bool
    refit_samples: int = 0
    heal: HealConfig = HealConfig()
    pairs: str | None = None
    allow_untrained_head: bool = False  # a gate, not a setting: no part of the run's identity
    progressive_schedule: str = PER_STAGE
    recalibrate_samples: int = 0
    guard: CollapseGuard = CollapseGuard(retries=0)

    def settings(self) -> dict:
        """What identifies the run: a finished run with equal settings is not redone."""
        training = {k: v for k, v in asdict(self.training).items()
                    if k not in ("output_dir", "epochs", "max_steps", "seed", "precision",
                                 "device", "progress", "resume")
                    and (k, v) not in NEUTRAL_TRAINING}
        trains = self.strategy not in UNTRAINED
        distils = self.strategy in ("distill", "progressive", "replace")
        return {"teacher": self.teacher_path, "task": asdict(self.source), "layers": self.layers,
                "teacher_content": content_fingerprint(resolve_model(self.teacher_path)),
                "data_content": content_fingerprint(self.source.name),
                "method": self.method, "strategy": self.strategy, "seed": self.seed,
                "precision": self.runtime.precision,
                "budget": str(self.budget) if trains else None,
                "distill": self.distill.to_dict() if distils else None,
                "graft_options": self.options.to_dict() if self.method in TAKES_OPTIONS
                else None,
                "analysis": {k: v for k, v in asdict(self.analysis).items() if k != "progress"},
                "training": training if trains else None,
                # absent at their defaults, so that runs from before the options stay valid
                **({"refit_samples": self.refit_samples} if self.refit_samples else {}),
                **({"recalibrate_samples": self.recalibrate_samples}
                   if self.recalibrate_samples else {}),
                **({"guard": self.guard.to_dict()} if self.guard.retries and trains else {}),
                **({"pairs": self.pairs} if self.pairs else {}),
                **({"heal": self.heal.to_dict()} if self.heal.steps else {}),
                **({"replace": REPLACE.to_dict()} if self.strategy == "replace" else {}),
                **({"progressive_schedule": self.progressive_schedule}
                   if self.progressive_schedule != PER_STAGE else {}),
                **({} if self.ood else {"ood": False})}

    def execute(self, state: PartialState, task: Task, teacher: PreTrainedModel,
                tokenizer: PreTrainedTokenizerBase) -> dict:
        start = time.perf_counter()
        self.runtime.reset_peak_memory()
        teacher.to(state.device)
        encoded = encode(task, tokenizer, self.training.max_length)
        depth = num_layers(teacher.config)
        if not 1 <= self.layers < depth:
            raise LayergraftError(f"--layers must be between 1 and {depth - 1} for this "
                                  f"{depth}-layer teacher, not {self.layers}")
        if self.training.batch_size % state.num_processes:
            raise LayergraftError(f"batch size {self.training.batch_size} does not divide "
                                  f"among {state.num_processes} processes: choose a multiple")
        total = (self.budget.steps(len(encoded["train"]), self.training.batch_size)
                 if self.strategy not in UNTRAINED else 0)
        budget_steps = total  # healing, if any, is charged against it
        plan = Plan.from_spans(depth, self.pairs) if self.pairs else None
        ctx = RunContext(self, state, task, teacher, tokenizer, encoded)
        analysis, analysis_dir, analysis_seconds = ctx.teacher_analysis()
        manifest = Manifest.for_teacher(teacher)
        healed = None
        if self.strategy == "progressive":
            student, manifest, stages = ctx.progressive(analysis, manifest, total)
        else:
            student, manifest = ctx.surgery(teacher, manifest, self.layers, analysis, plan)
            if self.heal.steps:
                student, healed = ctx.heal(student, manifest)
                total = steps_after_heal(total, healed["charge"], self.strategy)
            stages = [] if self.strategy in UNTRAINED else [ctx.train_stage(
                student, manifest, total, self.out / CHECKPOINTS)]
            student = stages[-1].pop("model") if stages else student
        # the graft options chosen by reconstruction, per step (as in the manifest)
        choices = [step.choice for step in manifest.steps if step.choice]
        record = {"format": FORMAT, "settings": self.settings(), "task": task.spec.name,
                  "primary_metric": task.spec.primary_metric, "method": self.method,
                  "strategy": self.strategy, "layers": self.layers, "seed": self.seed,
                  "depths": manifest.depths(),
                  "teacher": {"path": self.teacher_path, "layers": depth,
                              "parameters": num_parameters(teacher),
                              "fingerprint": model_fingerprint(teacher)},
                  "student": {"layers": num_layers(student.config),
                              "parameters": num_parameters(student)},
                  "train": {"budget": str(self.budget), "budget_steps": budget_steps,
                            "steps": sum(s["steps"] for s in stages),
                            "seconds": round(sum(s["seconds"] for s in stages), 2),
                            "stages": stages, **self.runtime.peak_memory()},
                  "heal": healed,
                  **({"choice": choices} if choices else {}),
                  "analysis_seconds": round(analysis_seconds, 2),
                  "analysis_dir": str(analysis_dir)}
        sets = evaluation_sets(task, encoded, tokenizer, self.training.max_length, self.ood)
        # every rank: the cache build syncs
        teacher_preds = teacher_predictions(teacher, sets, tokenizer, self.cache)
        if state.is_main_process:
            record.update(score_student(
                student, sets, teacher_preds, tokenizer, task.spec, self.out / PREDICTIONS_NAME,
                batch_size=self.training.eval_batch_size, precision=self.runtime.precision,
                progress=self.progress))
            record["speed"] = (time_student(teacher, student, encoded["dev"],
                                            precision=self.runtime.precision, seed=self.seed)
                               if self.speed else None)
            record["runtime"] = self.runtime.record()
            record["seconds"] = round(time.perf_counter() - start, 2)
            record["versions"] = versions()
            save_model(student.eval(), tokenizer, self.out, manifest=manifest, overwrite=True)
            write_json_atomic(self.out / RESULTS_NAME, record)
            write_card(self.out, manifest.to_dict(), record)
            for work in WORK_FOLDERS:
                shutil.rmtree(self.out / work, ignore_errors=True)
        state.wait_for_everyone()
        return json.loads((self.out / RESULTS_NAME).read_text())
