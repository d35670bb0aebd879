"""A classifier's compress run: what identifies it (`_Run.settings`) and its session on the
loaded teacher and task (`TaskSession`: surgery, the strategy's training, evaluation
against the teacher, speed, saving). Strategies (DESIGN section 6): `none` (surgery only),
`heal`, `finetune` (task labels), `distill`, `progressive` and `replace`; every one trains
through `RunContext.train_stage` with the same `Budget` in optimizer steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import PartialState

from layergraft.data.encoding import encode
from layergraft.data.tasks import Task, TaskSource
from layergraft.errors import LayergraftError
from layergraft.models import load_for_task, resolve_model, save_model
from layergraft.objectives.base import Run, Session
from layergraft.objectives.runs import CHECKPOINTS, FORMAT, PREDICTIONS_NAME
from layergraft.objectives.strategies import PER_STAGE, UNTRAINED, steps_after_heal
from layergraft.objectives.task.assess import (
    evaluation_sets,
    score_student,
    teacher_predictions,
    time_student,
)
from layergraft.objectives.task.context import RunContext
from layergraft.runtime import Runtime
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.arch import num_layers
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.methods import TAKES_OPTIONS, GraftOptions
from layergraft.surgery.plan import Plan
from layergraft.training.budget import Budget
from layergraft.training.distill import DistillConfig, model_fingerprint
from layergraft.training.guard import CollapseGuard
from layergraft.training.heal import HealConfig
from layergraft.training.parallel import process_state
from layergraft.training.replace import REPLACE
from layergraft.training.train import TrainConfig
from layergraft.utils import content_fingerprint, num_parameters

# Training settings at these values are left out of a run's identity, so that runs made
# before the option existed stay valid.
NEUTRAL_TRAINING = {("group_by_length", False), ("inherited_learning_rate", None),
                    ("layer_decay", None)}


@dataclass
class _Run(Run):
    """One compress run of a classifier (`layergraft.objectives.task.TaskObjective.run`)."""

    teacher_path: str
    source: TaskSource
    layers: int
    method: str
    strategy: str
    budget: Budget
    seed: int
    resolved: Runtime
    distill: DistillConfig
    options: GraftOptions
    analysis: AnalysisSettings
    training: TrainConfig
    out: Path
    cache: Path
    speed: bool
    ood: bool
    progress: bool
    objective: object = None
    refit_samples: int = 0
    heal: HealConfig = HealConfig()
    pairs: str | None = None
    allow_untrained_head: bool = False  # a gate, not a setting: no part of the run's identity
    progressive_schedule: str = PER_STAGE
    recalibrate_samples: int = 0
    guard: CollapseGuard = CollapseGuard(retries=0)

    @property
    def runtime(self) -> Runtime:
        return self.resolved

    def settings(self) -> dict:
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

    def processes(self) -> PartialState:
        return process_state(self.runtime)

    def load(self, state: PartialState) -> TaskSession:
        task = self.source.load()  # bad data or weights are refused before anything is written
        teacher, tokenizer = load_for_task(self.teacher_path, task,
                                           allow_untrained_head=self.allow_untrained_head)
        return TaskSession(self, state, task, teacher, tokenizer)


class TaskSession(Session):
    """A classifier run's loaded teacher and task; `build` is surgery and training."""

    def __init__(self, run: _Run, state: PartialState, task: Task, teacher, tokenizer):
        self.run, self.state, self.task = run, state, task
        self.teacher, self.tokenizer = teacher, tokenizer
        self.importance_loss = run.analysis.loss
        self.encoded = self.context = None

    @property
    def is_main(self) -> bool:
        return self.state.is_main_process

    def wait(self) -> None:
        self.state.wait_for_everyone()

    def teacher_outputs(self, data: dict):
        """The teacher's logits on each encoded set, from the shared cache (every rank: the
        cache build syncs)."""
        return teacher_predictions(self.teacher, data, self.tokenizer, self.run.cache)

    def distill_loss(self, student, manifest: Manifest):
        return self.context.distill_loss(student, manifest)

    def heal(self, student, manifest: Manifest):
        return self.context.heal(student, manifest)

    def build(self):
        run, state, teacher = self.run, self.state, self.teacher
        run.runtime.reset_peak_memory()
        teacher.to(state.device)
        self.encoded = encode(self.task, self.tokenizer, run.training.max_length)
        depth = num_layers(teacher.config)
        if not 1 <= run.layers < depth:
            raise LayergraftError(f"--layers must be between 1 and {depth - 1} for this "
                                  f"{depth}-layer teacher, not {run.layers}")
        if run.training.batch_size % state.num_processes:
            raise LayergraftError(f"batch size {run.training.batch_size} does not divide "
                                  f"among {state.num_processes} processes: choose a multiple")
        total = (run.budget.steps(len(self.encoded["train"]), run.training.batch_size)
                 if run.strategy not in UNTRAINED else 0)
        budget_steps = total  # healing, if any, is charged against it
        plan = Plan.from_spans(depth, run.pairs) if run.pairs else None
        ctx = self.context = RunContext(run, state, self.task, teacher, self.tokenizer,
                                        self.encoded)
        analysis, analysis_dir, analysis_seconds = ctx.teacher_analysis()
        manifest = Manifest.for_teacher(teacher)
        healed = None
        if run.strategy == "progressive":
            student, manifest, stages = ctx.progressive(analysis, manifest, total)
        else:
            student, manifest = ctx.surgery(teacher, manifest, run.layers, analysis, plan)
            if run.heal.steps:
                student, healed = self.heal(student, manifest)
                total = steps_after_heal(total, healed["charge"], run.strategy)
            stages = [] if run.strategy in UNTRAINED else [ctx.train_stage(
                student, manifest, total, run.out / CHECKPOINTS)]
            student = stages[-1].pop("model") if stages else student
        # the graft options chosen by reconstruction, per step (as in the manifest)
        choices = [step.choice for step in manifest.steps if step.choice]
        record = {"format": FORMAT, "settings": run.settings(), "task": self.task.spec.name,
                  "primary_metric": self.task.spec.primary_metric, "method": run.method,
                  "strategy": run.strategy, "layers": run.layers, "seed": run.seed,
                  "depths": manifest.depths(),
                  "teacher": {"path": run.teacher_path, "layers": depth,
                              "parameters": num_parameters(teacher),
                              "fingerprint": model_fingerprint(teacher)},
                  "student": {"layers": num_layers(student.config),
                              "parameters": num_parameters(student)},
                  "train": {"budget": str(run.budget), "budget_steps": budget_steps,
                            "steps": sum(s["steps"] for s in stages),
                            "seconds": round(sum(s["seconds"] for s in stages), 2),
                            "stages": stages, **run.runtime.peak_memory()},
                  "heal": healed,
                  **({"choice": choices} if choices else {}),
                  "analysis_seconds": round(analysis_seconds, 2),
                  "analysis_dir": str(analysis_dir)}
        return student, manifest, record

    def evaluate(self, student) -> dict:
        """Metrics, retention and agreement vs the teacher on dev, test and the task's
        out-of-domain sets; the per-example outputs saved beside the record."""
        run = self.run
        sets = evaluation_sets(self.task, self.encoded, self.tokenizer, run.training.max_length,
                               run.ood)
        teacher_preds = self.teacher_outputs(sets)
        if not self.is_main:
            return {}
        return score_student(student, sets, teacher_preds, self.tokenizer, self.task.spec,
                             run.out / PREDICTIONS_NAME,
                             batch_size=run.training.eval_batch_size,
                             precision=run.runtime.precision, progress=run.progress)

    def speed(self, student, measure_speed) -> dict:
        return time_student(self.teacher, student, self.encoded["dev"],
                            precision=self.run.runtime.precision, seed=self.run.seed,
                            measure_speed=measure_speed)

    def save(self, student, manifest: Manifest) -> None:
        save_model(student.eval(), self.tokenizer, self.run.out, manifest=manifest,
                   overwrite=True)
