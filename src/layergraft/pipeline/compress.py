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

from layergraft.data.encoding import encode
from layergraft.data.tasks import TaskSource, as_source
from layergraft.errors import LayergraftError
from layergraft.models import (
    holds_model,
    load_classifier,
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
from layergraft.pipeline.healing import heal_stage
from layergraft.pipeline.runs import (
    CHECKPOINTS,
    FORMAT,
    PREDICTIONS_NAME,
    PROGRESSIVE,
    RESULTS_NAME,
    WORK_FOLDERS,
    finished_results,
    run_status,
    start_fresh_or_resume,
)
from layergraft.pipeline.strategies import (
    ONE,
    PER_STAGE,
    UNTRAINED,
    check_request,
    normalized_spans,
    steps_after_heal,
)
from layergraft.pipeline.workflows import refit_after_surgery
from layergraft.report.model_card import write_card
from layergraft.runtime import Runtime
from layergraft.scoring.analysis import (
    Analysis,
    AnalysisSettings,
    load_analysis,
    measure,
    save_analysis,
)
from layergraft.surgery.arch import num_layers
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.methods import NEEDS_SCORES, TAKES_OPTIONS, GraftOptions
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import unchanged_parameters
from layergraft.training.attention import attention_teacher
from layergraft.training.budget import Budget, next_share
from layergraft.training.calibrate import ReconstructionJudge, calibration_texts
from layergraft.training.distill import (
    DistillConfig,
    TeacherCache,
    dataset_fingerprint,
    layer_map_from_manifest,
    make_distill_loss,
    model_fingerprint,
)
from layergraft.training.heal import HealConfig
from layergraft.training.parallel import process_state
from layergraft.training.replace import REPLACE, ScheduleCallback, unwrap, wrap
from layergraft.training.schedule import OneSchedule
from layergraft.training.train import TrainConfig, student_training, train
from layergraft.utils import (
    cache_root,
    content_fingerprint,
    num_parameters,
    short_hash,
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
    """
    heal = heal or HealConfig()
    check_request(method, strategy, pairs, heal, progressive_schedule)
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
               progressive_schedule=progressive_schedule)
    if dry_run:
        return {"status": run_status(run), "out": str(run.out), "settings": run.settings()}
    state = process_state(run.runtime)
    finished = finished_results(run, overwrite)
    if finished is not None:
        return finished
    if state.is_main_process:
        start_fresh_or_resume(run, overwrite, replace_other_runs)
    state.wait_for_everyone()
    return run.execute(state)



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

    def settings(self) -> dict:
        """What identifies the run: a finished run with equal settings is not redone."""
        training = {k: v for k, v in asdict(self.training).items()
                    if k not in ("output_dir", "epochs", "max_steps", "seed", "precision",
                                 "device", "progress", "resume")
                    and (k, v) != ("group_by_length", False)}  # runs from before it stay valid
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
                **({"pairs": self.pairs} if self.pairs else {}),
                **({"heal": self.heal.to_dict()} if self.heal.steps else {}),
                **({"replace": REPLACE.to_dict()} if self.strategy == "replace" else {}),
                **({"progressive_schedule": self.progressive_schedule}
                   if self.progressive_schedule != PER_STAGE else {}),
                **({} if self.ood else {"ood": False})}

    def execute(self, state: PartialState) -> dict:
        start = time.perf_counter()
        self.runtime.reset_peak_memory()
        task = self.source.load()
        teacher, tokenizer = load_for_task(self.teacher_path, task,
                                           allow_untrained_head=self.allow_untrained_head)
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
        ctx = _Context(self, state, task, teacher, tokenizer, encoded)
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


class _Context:
    """The loaded teacher, task and encoded data one run works on."""

    def __init__(self, run: _Run, state: PartialState, task, teacher, tokenizer, encoded):
        self.run, self.state, self.task = run, state, task
        self.teacher, self.tokenizer, self.encoded = teacher, tokenizer, encoded
        self.train_fingerprint = dataset_fingerprint(encoded["train"])

    def teacher_analysis(self) -> tuple[Analysis, Path, float]:
        """Importance and similarity of the teacher, measured once per teacher/data/settings;
        the folder also holds their plots."""
        settings = {k: v for k, v in asdict(self.run.analysis).items() if k != "progress"}
        key = json.dumps({**settings, "precision": self.run.runtime.precision}, sort_keys=True)
        folder = (self.run.cache / "analysis" / f"model-{model_fingerprint(self.teacher)}"
                  / f"data-{self.train_fingerprint}" / short_hash(key))
        start = time.perf_counter()
        with self.state.local_main_process_first():
            if not (folder / "analysis.json").is_file():
                save_analysis(self.measure(self.teacher, self.run.analysis), folder)
        return load_analysis(folder), folder, time.perf_counter() - start

    def measure(self, model, settings: AnalysisSettings) -> Analysis:
        return measure(model, self.tokenizer, self.task, settings,
                       precision=self.run.runtime.precision)

    def surgery(self, model, manifest: Manifest, layers: int, analysis: Analysis,
                plan: Plan | None = None):
        student, manifest = graft_model(
            model, layers=layers, plan=plan, method=self.run.method,
            head_scores=analysis.scores.head, neuron_scores=analysis.scores.neuron,
            cka=analysis.cka, adjacent_cosine=analysis.adjacent_cosine, options=self.run.options,
            importance_info={**analysis.info, "scores": analysis.scores.info},
            seed=self.run.seed, manifest=manifest, judge=self.judge(model))
        if self.run.refit_samples:
            refit_after_surgery(student, model, manifest.steps[-1], self.task, self.tokenizer,
                                replace(self.run.analysis, samples=self.run.refit_samples))
        return student, manifest

    def judge(self, model) -> ReconstructionJudge | None:
        """What `--choose-by reconstruction` measures candidates with: `model`'s states on
        the calibration sample of the training split (None when the options do not ask)."""
        if not self.run.options.by_reconstruction:
            return None
        return ReconstructionJudge(
            model, calibration_texts(self.encoded["train"], self.run.options.calibration),
            self.tokenizer, cache_dir=self.run.cache)

    def heal(self, student, manifest: Manifest):
        """Local healing of the fresh student (kept in the run folder for a resume)."""
        run = self.run
        return heal_stage(student, manifest, self.teacher, self.encoded["train"],
                          self.tokenizer, run.heal, out=run.out, runtime=run.runtime,
                          train_batch=run.training.batch_size, cache_dir=run.cache,
                          seed=run.seed, progress=run.progress,
                          is_main=self.state.is_main_process)

    def progressive(self, analysis: Analysis, manifest: Manifest, total: int):
        """Merge one pair at a time (most similar first), distilling after each merge.

        Each stage gets its share of `total` (`next_share`), so all stages together take
        exactly the steps `distill` gets; with the `one` schedule a stage starts where the
        previous one stopped, on one curve with one optimizer (`OneSchedule`)."""
        model, run = self.teacher, self.run
        schedule = OneSchedule(total) if run.progressive_schedule == ONE else None
        stages = []
        # Methods that ignore importance only need the (forward-only) similarity.
        again = (run.analysis if run.method in NEEDS_SCORES
                 else replace(run.analysis, importance="weight"))
        for target in range(num_layers(model.config) - 1, run.layers - 1, -1):
            saved = run.out / PROGRESSIVE / f"{target}-layers"
            if holds_model(saved):  # finished by an interrupted earlier call
                model, _ = load_classifier(str(saved))
                model.to(self.state.device)
                manifest = Manifest.load(saved)
                stages.append(json.loads((saved / "stage.json").read_text()))
                schedule = OneSchedule.load(saved) if schedule else None
                continue
            if model is not self.teacher:
                analysis = self.measure(model, again)
            model, manifest = self.surgery(model, manifest, target, analysis)
            taken = schedule.offset if schedule else sum(s["steps"] for s in stages)
            share = next_share(total, taken, target - run.layers + 1)
            if schedule:
                schedule.follow(unchanged_parameters(model, manifest.steps[-1].recipes))
            stage = self.train_stage(model, manifest, share, run.out / CHECKPOINTS / saved.name,
                                     schedule)
            model = stage.pop("model")
            stages.append(stage)
            if self.state.is_main_process:  # the model last: it marks the stage finished
                write_json_atomic(saved / "stage.json", stage)
                if schedule:
                    schedule.save(saved)
                save_model(model, self.tokenizer, saved, manifest=manifest, overwrite=True)
            self.state.wait_for_everyone()
        return model, manifest, stages

    def train_stage(self, student, manifest: Manifest, steps: int, output_dir: Path,
                    schedule: OneSchedule | None = None) -> dict:
        """The one training code path of every method and strategy (`schedule`: a stage of
        progressive's one schedule)."""
        run = self.run
        loss_fn = None
        if run.strategy != "finetune":
            layer_map = layer_map_from_manifest(manifest) if run.distill.uses_hidden else []
            teacher = TeacherCache.build(self.teacher, self.encoded["train"], self.tokenizer,
                                         layers=layer_map, cache_dir=run.cache,
                                         batch_size=run.training.eval_batch_size)
            attention = attention_teacher(run.distill.attention_weight, self.teacher, student,
                                          manifest)
            loss_fn = make_distill_loss(teacher, run.distill, layer_map=layer_map,
                                        attention=attention)
        config = replace(run.training, output_dir=str(output_dir), max_steps=steps,
                         batch_size=run.training.batch_size // self.state.num_processes,
                         seed=run.seed, precision=run.runtime.precision,
                         device=str(self.state.device), progress=run.progress, resume=True)
        callbacks = []
        if run.strategy == "replace":  # each span: the teacher's layers, then the graft alone
            groups = Plan.from_dict(manifest.steps[-1].plan).groups
            callbacks = [ScheduleCallback(wrap(student, self.teacher, groups), REPLACE, steps)]
        result = train(student, self.tokenizer, self.encoded, config, loss_fn=loss_fn,
                       callbacks=callbacks, spec=self.task.spec, schedule=schedule)
        return {"model": unwrap(result.model), "layers": num_layers(student.config), "steps": steps,
                "global_step": result.global_step, "seconds": round(result.train_seconds, 2),
                "dev": result.metrics}
