"""The work of one compress run on its loaded teacher and data: surgery (with refit and
recalibration), healing, progressive merging, and the one training code path of every method
and strategy (under the collapse guard). `layergraft.objectives.task.run` says what a run is."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate import PartialState

from layergraft.models import holds_model, load_classifier, save_model
from layergraft.objectives.runs import CHECKPOINTS, PROGRESSIVE
from layergraft.objectives.strategies import ONE
from layergraft.objectives.task.healing import heal_stage
from layergraft.objectives.task.repair import recalibrate_after_surgery, refit_after_surgery
from layergraft.scoring.analysis import (
    Analysis,
    AnalysisSettings,
    load_analysis,
    measure,
    save_analysis,
)
from layergraft.surgery.arch import encoder_layers, num_layers
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.methods import NEEDS_SCORES
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import unchanged_parameters
from layergraft.training.attention import attention_teacher
from layergraft.training.budget import next_share
from layergraft.training.calibrate import ReconstructionJudge, calibration_texts
from layergraft.training.distill import (
    TeacherCache,
    dataset_fingerprint,
    layer_map_from_manifest,
    make_distill_loss,
    model_fingerprint,
)
from layergraft.training.guard import CollapseGuard, train_guarded
from layergraft.training.replace import REPLACE, ScheduleCallback, unwrap, wrap
from layergraft.training.schedule import OneSchedule
from layergraft.training.train import layer_decay_scales, train
from layergraft.utils import short_hash, write_json_atomic

if TYPE_CHECKING:
    from layergraft.objectives.task.run import _Run


class RunContext:
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
        if self.run.recalibrate_samples:
            recalibrate_after_surgery(
                student, model, manifest.steps[-1], self.task, self.tokenizer,
                replace(self.run.analysis, samples=self.run.recalibrate_samples))
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

    def distill_loss(self, student, manifest: Manifest):
        """The distillation loss: logits (and hidden states, attention where asked) of the
        teacher, cached once for the training split (`layergraft.training.distill`)."""
        run = self.run
        layer_map = layer_map_from_manifest(manifest) if run.distill.uses_hidden else []
        teacher = TeacherCache.build(self.teacher, self.encoded["train"], self.tokenizer,
                                     layers=layer_map, cache_dir=run.cache,
                                     batch_size=run.training.eval_batch_size)
        attention = attention_teacher(run.distill.attention_weight, self.teacher, student,
                                      manifest)
        return make_distill_loss(teacher, run.distill, layer_map=layer_map, attention=attention)

    def train_stage(self, student, manifest: Manifest, steps: int, output_dir: Path,
                    schedule: OneSchedule | None = None) -> dict:
        """The one training code path of every method and strategy (`schedule`: a stage of
        progressive's one schedule)."""
        run = self.run
        loss_fn = None if run.strategy == "finetune" else self.distill_loss(student, manifest)
        config = replace(run.training, output_dir=str(output_dir), max_steps=steps,
                         batch_size=run.training.batch_size // self.state.num_processes,
                         seed=run.seed, precision=run.runtime.precision,
                         device=str(self.state.device), progress=run.progress, resume=True)
        unchanged = _unchanged_names(student, manifest, run.training.inherited_learning_rate)
        scales = layer_decay_scales(student, encoder_layers(student), run.training.layer_decay)
        callbacks = []
        if run.strategy == "replace":  # each span: the teacher's layers, then the graft alone
            groups = Plan.from_dict(manifest.steps[-1].plan).groups
            callbacks = [ScheduleCallback(wrap(student, self.teacher, groups), REPLACE, steps)]
        plain = _plain_names(student)
        inherited = {name for name, own in plain.items() if own in unchanged}
        scales = {name: scales[own] for name, own in plain.items() if own in scales}

        def stage(model, stage_config):
            return train(model, self.tokenizer, self.encoded, stage_config, loss_fn=loss_fn,
                         callbacks=callbacks, spec=self.task.spec, schedule=schedule,
                         inherited=inherited, scales=scales)

        # a stage of one long schedule cannot restart alone: it shares its curve and moments
        guard = run.guard if schedule is None else CollapseGuard(retries=0)
        result, restarts = train_guarded(student, config, guard, self.task.spec.is_regression,
                                         stage)
        return {"model": unwrap(result.model), "layers": num_layers(student.config), "steps": steps,
                "global_step": result.global_step, "seconds": round(result.train_seconds, 2),
                "dev": result.metrics, **({"restarts": restarts} if restarts else {})}


def _unchanged_names(student, manifest: Manifest, rate: float | None) -> set[str]:
    """The student's parameters that surgery copied unchanged (embeddings, head, intact
    layers), when they train at a rate of their own; else none."""
    if rate is None:
        return set()
    return set(unchanged_parameters(student, manifest.steps[-1].recipes))


def _plain_names(student) -> dict[str, str]:
    """Each parameter's name during training -> its name in the student: a replace wrapper
    nests a student layer under `.student.` (its teacher layers are frozen)."""
    return {name: name.replace(".student.", ".") for name, _ in student.named_parameters()}
