"""`layergraft compress`: surgery, training by one of four strategies, evaluation, speed.

Strategies (DESIGN section 6): `none` (surgery only), `finetune` (task labels),
`distill` (one-shot surgery, then distillation from the teacher) and `progressive`
(one pair at a time, most similar first, re-analysed and briefly distilled after each
merge). Every method and strategy trains through `_train_stage` with the same
`Budget` in optimizer steps, so comparisons are fair. Runs are resumable: a finished
`results.json` with the same settings is returned as is, and training resumes from its
checkpoints; only files this module wrote are ever replaced without --overwrite.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from accelerate import PartialState

from layergraft.analysis import Analysis, load_analysis, save_analysis
from layergraft.arch import num_layers
from layergraft.data import LABELS, encode
from layergraft.distill import (
    DistillConfig,
    TeacherCache,
    dataset_fingerprint,
    layer_map_from_manifest,
    make_distill_loss,
    model_fingerprint,
)
from layergraft.errors import LayergraftError
from layergraft.evaluation import agreement, predict
from layergraft.graft import graft_model
from layergraft.manifest import Manifest
from layergraft.methods import NEEDS_SCORES, GraftOptions, get_method
from layergraft.metrics import compute_metrics
from layergraft.modelio import holds_model, load_classifier, save_model
from layergraft.parallel import process_state
from layergraft.train import TrainConfig, train
from layergraft.utils import (
    cache_root,
    num_parameters,
    versions,
    write_bytes_atomic,
    write_json_atomic,
)
from layergraft.workflows import (
    AnalysisSettings,
    TaskSource,
    load_for_task,
    measure,
    refit_after_surgery,
)

STRATEGIES = ("none", "finetune", "distill", "progressive")
FORMAT = "layergraft-compress/1"
RESULTS_NAME = "results.json"
SETTINGS_NAME = "compress_settings.json"
PREDICTIONS_NAME = "predictions.npz"
CHECKPOINTS = "checkpoints"
PROGRESSIVE = "progressive"
EVAL_SPLITS = ("dev", "test")
# A surgically shrunk student recovers fastest at a much higher peak learning rate than
# fine-tuning's 5e-5 (benchmarks/graft_ablation.py, MiniLM movie-sentiment, 6 -> 2 layers,
# 0.75 epoch of distillation, dev accuracy, mean of seeds 0 and 1; graft / keep-alternate):
# 5e-5 77.2 / 75.4, 1e-4 77.4 / 76.1, 2e-4 78.8 / 77.1, 4e-4 80.8 / 78.4, 8e-4 80.7 / 80.0.
# Graft peaks at 4e-4; keep-alternate wants still more, since it starts further away.
STUDENT_LEARNING_RATE = 4e-4


def student_training(learning_rate: float | None = None, *,
                     group_by_length: bool = False) -> TrainConfig:
    """A student's training settings: the measured student learning rate unless one is given."""
    return TrainConfig(output_dir="", learning_rate=learning_rate or STUDENT_LEARNING_RATE,
                       group_by_length=group_by_length)


@dataclass(frozen=True)
class Budget:
    """How long every method and strategy trains: epochs of the train split, or steps.

    Epochs become optimizer steps with the global batch (ceil(train / batch) steps per
    epoch); `progressive` shares exactly the steps `distill` gets among its merges.
    """

    amount: float
    unit: str = "epochs"

    def __post_init__(self) -> None:
        if self.unit not in ("epochs", "steps") or self.amount <= 0 or (
                self.unit == "steps" and self.amount != int(self.amount)):
            raise LayergraftError(f"budget must be a positive number of epochs or a whole "
                                  f"number of steps, e.g. '3 epochs' or '500 steps', not {self}")

    @classmethod
    def parse(cls, value: Budget | str) -> Budget:
        if isinstance(value, Budget):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(epochs?|steps?)\s*", str(value))
        if not match:
            raise LayergraftError(f"cannot read budget '{value}': write e.g. '3 epochs' or "
                                  "'500 steps'")
        unit = match.group(2) if match.group(2).endswith("s") else match.group(2) + "s"
        return cls(float(match.group(1)), unit)

    def steps(self, train_examples: int, global_batch: int) -> int:
        if self.unit == "steps":
            return int(self.amount)
        return max(1, math.ceil(self.amount * math.ceil(train_examples / global_batch)))

    def __str__(self) -> str:
        return f"{self.amount:g} {self.unit}"


def split_steps(total: int, parts: int) -> list[int]:
    """`total` steps shared as evenly as possible by `parts` stages (later ones get more)."""
    if total < parts:
        raise LayergraftError(f"a budget of {total} steps cannot train {parts} progressive "
                              f"stages: give at least {parts} steps")
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


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
    bf16: bool = False,
    distill: DistillConfig | None = None,
    graft_options: GraftOptions | None = None,
    analysis: AnalysisSettings | None = None,
    training: TrainConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    speed: bool = True,
    ood: bool = True,
    progress: bool = True,
    refit_samples: int = 0,
    overwrite: bool = False,
    replace_other_runs: bool = False,
) -> dict:
    """Compress `teacher_path` to `layers` layers on `task`; save the student and results.

    `training` supplies the optimiser settings (default: `student_training()`); its
    `batch_size` is the global batch (divided among data-parallel processes) and its own
    length fields are replaced by `budget`. Importance/similarity of the teacher and its
    outputs are cached under `cache_dir` (default $LAYERGRAFT_CACHE or ~/.cache/layergraft)
    and shared by runs.
    Returns the results record, also written to `out_dir/results.json`.
    `refit_samples` > 0 refits each surgery's new layers by least squares on that many
    examples of the analysis split before training (`layergraft.refit`). `ood=False` skips
    the task's out-of-domain sets (dev and test only: a quick look, as in the demo).
    `replace_other_runs` lets a run replace an earlier compress run of other settings in
    `out_dir` (a suite rerun after a default changed) but still no other model.
    """
    if strategy not in STRATEGIES:
        raise LayergraftError(f"unknown strategy '{strategy}': choose one of "
                              f"{', '.join(STRATEGIES)}")
    get_method(method)
    source = TaskSource(task) if isinstance(task, str) else task
    run = _Run(teacher_path=str(teacher_path), source=source, layers=int(layers), method=method,
               strategy=strategy, budget=Budget.parse(budget), seed=seed, bf16=bf16,
               distill=distill or DistillConfig(), options=graft_options or GraftOptions(),
               analysis=replace(analysis or AnalysisSettings(), progress=progress),
               training=training or student_training(), out=Path(out_dir),
               cache=cache_root(cache_dir), speed=speed, ood=ood, progress=progress,
               refit_samples=refit_samples)
    state = process_state()
    finished = _finished_results(run, overwrite)
    if finished is not None:
        return finished
    if state.is_main_process:
        _start_fresh_or_resume(run, overwrite, replace_other_runs)
    state.wait_for_everyone()
    return run.execute(state)


@dataclass
class _Run:
    teacher_path: str
    source: TaskSource
    layers: int
    method: str
    strategy: str
    budget: Budget
    seed: int
    bf16: bool
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

    def settings(self) -> dict:
        """What identifies the run: a finished run with equal settings is not redone."""
        training = {k: v for k, v in asdict(self.training).items()
                    if k not in ("output_dir", "epochs", "max_steps", "seed", "bf16",
                                 "progress", "resume")
                    and (k, v) != ("group_by_length", False)}  # runs from before it stay valid
        trains, distils = self.strategy != "none", self.strategy in ("distill", "progressive")
        return {"teacher": self.teacher_path, "task": asdict(self.source), "layers": self.layers,
                "method": self.method, "strategy": self.strategy, "seed": self.seed,
                "bf16": self.bf16, "budget": str(self.budget) if trains else None,
                "distill": self.distill.to_dict() if distils else None,
                "graft_options": self.options.to_dict() if self.method in ("graft", "random")
                else None,
                "analysis": {k: v for k, v in asdict(self.analysis).items() if k != "progress"},
                "training": training if trains else None,
                # absent at their defaults, so that runs from before the options stay valid
                **({"refit_samples": self.refit_samples} if self.refit_samples else {}),
                **({} if self.ood else {"ood": False})}

    def execute(self, state: PartialState) -> dict:
        start = time.perf_counter()
        task = self.source.load()
        teacher, tokenizer = load_for_task(self.teacher_path, task)
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
                 if self.strategy != "none" else 0)
        ctx = _Context(self, state, task, teacher, tokenizer, encoded)
        analysis, analysis_dir, analysis_seconds = ctx.teacher_analysis()
        manifest = Manifest.for_teacher(teacher)
        if self.strategy == "progressive":
            student, manifest, stages = ctx.progressive(analysis, manifest, total)
        else:
            student, manifest = ctx.surgery(teacher, manifest, self.layers, analysis)
            stages = [] if self.strategy == "none" else [ctx.train_stage(
                student, manifest, total, self.out / CHECKPOINTS)]
            student = stages[-1].pop("model") if stages else student
        record = {"format": FORMAT, "settings": self.settings(), "task": task.spec.name,
                  "primary_metric": task.spec.primary_metric, "method": self.method,
                  "strategy": self.strategy, "layers": self.layers, "seed": self.seed,
                  "depths": manifest.depths(),
                  "teacher": {"path": self.teacher_path, "layers": depth,
                              "parameters": num_parameters(teacher),
                              "fingerprint": model_fingerprint(teacher)},
                  "student": {"layers": num_layers(student.config),
                              "parameters": num_parameters(student)},
                  "train": {"budget": str(self.budget), "budget_steps": total,
                            "steps": sum(s["steps"] for s in stages),
                            "seconds": round(sum(s["seconds"] for s in stages), 2),
                            "stages": stages},
                  "analysis_seconds": round(analysis_seconds, 2),
                  "analysis_dir": str(analysis_dir)}
        sets = ctx.eval_sets()
        teacher_preds = ctx.teacher_predictions(sets)  # every rank: the cache build syncs
        if state.is_main_process:
            record.update(ctx.evaluate(student, sets, teacher_preds))
            record["speed"] = ctx.speed(student) if self.speed else None
            record["seconds"] = round(time.perf_counter() - start, 2)
            record["versions"] = versions()
            save_model(student.eval(), tokenizer, self.out, manifest=manifest, overwrite=True)
            write_json_atomic(self.out / RESULTS_NAME, record)
            for work in (CHECKPOINTS, PROGRESSIVE):
                shutil.rmtree(self.out / work, ignore_errors=True)
        state.wait_for_everyone()
        return json.loads((self.out / RESULTS_NAME).read_text())


class _Context:
    """The loaded teacher, task and encoded data one run works on."""

    def __init__(self, run: _Run, state: PartialState, task, teacher, tokenizer, encoded):
        self.run, self.state, self.task = run, state, task
        self.teacher, self.tokenizer, self.encoded = teacher, tokenizer, encoded
        self.train_fingerprint = dataset_fingerprint(encoded["train"])

    def eval_sets(self) -> dict:
        """Labelled dev and test, then the task's out-of-domain sets (named by their task)."""
        sets = {split: self.encoded[split] for split in EVAL_SPLITS
                if split in self.encoded and LABELS in self.encoded[split].column_names}
        for name, other in (self.task.ood() if self.run.ood else {}).items():
            sets[name] = encode(other, self.tokenizer, self.run.training.max_length,
                                splits=["test"])["test"]
        return sets

    def teacher_analysis(self) -> tuple[Analysis, Path, float]:
        """Importance and similarity of the teacher, measured once per teacher/data/settings;
        the folder also holds their plots."""
        settings = {k: v for k, v in asdict(self.run.analysis).items() if k != "progress"}
        key = json.dumps(settings, sort_keys=True)
        folder = (self.run.cache / "analysis" / f"model-{model_fingerprint(self.teacher)}"
                  / f"data-{self.train_fingerprint}" / _short_hash(key))
        start = time.perf_counter()
        with self.state.local_main_process_first():
            if not (folder / "analysis.json").is_file():
                save_analysis(self.measure(self.teacher, self.run.analysis), folder)
        return load_analysis(folder), folder, time.perf_counter() - start

    def measure(self, model, settings: AnalysisSettings) -> Analysis:
        return measure(model, self.tokenizer, self.task, settings)

    def surgery(self, model, manifest: Manifest, layers: int, analysis: Analysis):
        student, manifest = graft_model(
            model, layers=layers, method=self.run.method, head_scores=analysis.scores.head,
            neuron_scores=analysis.scores.neuron, cka=analysis.cka,
            adjacent_cosine=analysis.adjacent_cosine, options=self.run.options,
            importance_info={**analysis.info, "scores": analysis.scores.info},
            seed=self.run.seed, manifest=manifest)
        if self.run.refit_samples:
            refit_after_surgery(student, model, manifest.steps[-1], self.task, self.tokenizer,
                                replace(self.run.analysis, samples=self.run.refit_samples))
        return student, manifest

    def progressive(self, analysis: Analysis, manifest: Manifest, total: int):
        """Merge one pair at a time (most similar first), distilling after each merge."""
        model, run = self.teacher, self.run
        depth = num_layers(model.config)
        shares = split_steps(total, depth - run.layers)
        stages = []
        # Methods that ignore importance only need the (forward-only) similarity.
        again = (run.analysis if run.method in NEEDS_SCORES
                 else replace(run.analysis, importance="weight"))
        for share, target in zip(shares, range(depth - 1, run.layers - 1, -1), strict=True):
            saved = run.out / PROGRESSIVE / f"{target}-layers"
            if holds_model(saved):  # finished by an interrupted earlier call
                model, _ = load_classifier(str(saved))
                model.to(self.state.device)
                manifest = Manifest.load(saved)
                stages.append(json.loads((saved / "stage.json").read_text()))
                continue
            if model is not self.teacher:
                analysis = self.measure(model, again)
            model, manifest = self.surgery(model, manifest, target, analysis)
            stage = self.train_stage(model, manifest, share, run.out / CHECKPOINTS / saved.name)
            model = stage.pop("model")
            stages.append(stage)
            if self.state.is_main_process:
                save_model(model, self.tokenizer, saved, manifest=manifest, overwrite=True)
                write_json_atomic(saved / "stage.json", stage)
            self.state.wait_for_everyone()
        return model, manifest, stages

    def train_stage(self, student, manifest: Manifest, steps: int, output_dir: Path) -> dict:
        """The one training code path of every method and strategy."""
        run = self.run
        loss_fn = None
        if run.strategy != "finetune":
            layer_map = layer_map_from_manifest(manifest) if run.distill.uses_hidden else []
            teacher = TeacherCache.build(self.teacher, self.encoded["train"], self.tokenizer,
                                         layers=layer_map, cache_dir=run.cache,
                                         batch_size=run.training.eval_batch_size)
            loss_fn = make_distill_loss(teacher, run.distill, layer_map=layer_map)
        config = replace(run.training, output_dir=str(output_dir), max_steps=steps,
                         batch_size=run.training.batch_size // self.state.num_processes,
                         seed=run.seed, bf16=run.bf16, progress=run.progress, resume=True)
        result = train(student, self.tokenizer, self.encoded, config, loss_fn=loss_fn,
                       spec=self.task.spec)
        return {"model": result.model, "layers": num_layers(student.config), "steps": steps,
                "global_step": result.global_step, "seconds": round(result.train_seconds, 2),
                "dev": result.metrics}

    def teacher_predictions(self, sets: dict) -> dict[str, np.ndarray]:
        """The teacher's outputs on the evaluation sets, from the shared cache."""
        return {split: TeacherCache.build(self.teacher, data, self.tokenizer,
                                          cache_dir=self.run.cache).ordered_logits().numpy()
                for split, data in sets.items()}

    def evaluate(self, student, sets: dict, teacher_preds: dict[str, np.ndarray]) -> dict:
        """Metrics, retention and agreement vs the teacher on every evaluation set; saves
        the student's and teacher's per-example outputs and the labels."""
        spec, out, arrays = self.task.spec, {}, {}
        for split, teacher in teacher_preds.items():
            data = sets[split]
            preds = predict(student, data, self.tokenizer, self.run.training.eval_batch_size,
                            progress=self.run.progress, bf16=self.run.bf16)
            labels = np.asarray(data[LABELS])
            ours, theirs = (compute_metrics(spec.metrics, p, labels,
                                            regression=spec.is_regression)
                            for p in (preds, teacher))
            out[split] = {"examples": len(data), "metrics": ours, "teacher": theirs,
                          "retention": {k: ours[k] / theirs[k] if theirs[k] else None
                                        for k in ours},
                          "agreement": agreement(preds, teacher, spec)}
            arrays.update({split: preds, f"teacher_{split}": teacher, f"labels_{split}": labels})
        _save_npz_atomic(self.run.out / PREDICTIONS_NAME, arrays)
        return {**out, "predictions": PREDICTIONS_NAME}

    def speed(self, student) -> dict:
        """Teacher and student timed in the same run on the dev split's real lengths."""
        from layergraft.bench import measure_speed

        data = self.encoded["dev"]
        lengths = [len(ids) for ids in data["input_ids"]]
        rows = measure_speed({"teacher": self.teacher, "student": student.eval()}, lengths,
                             bf16=self.run.bf16, seed=self.run.seed)
        ratio = {str(r["batch_size"]): r["throughput_ratio"] for r in rows
                 if r["model"] == "student"}
        return {"throughput_ratio": ratio, "records": rows}


def _finished_results(run: _Run, overwrite: bool) -> dict | None:
    path = run.out / RESULTS_NAME
    if overwrite or not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("settings") == run.settings() else None


def _start_fresh_or_resume(run: _Run, overwrite: bool, replace_other_runs: bool) -> None:
    """Resume our own unfinished run with the same settings; otherwise start clean, but
    never replace another run or a model without --overwrite."""
    settings_path = run.out / SETTINGS_NAME
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if previous == run.settings() and not overwrite:
        return
    replaceable = overwrite or (replace_other_runs and previous is not None)
    if not replaceable and (previous is not None or holds_model(run.out)
                            or (run.out / RESULTS_NAME).exists()):
        raise LayergraftError(f"'{run.out}' holds another run or model: choose another --out "
                              "or pass --overwrite")
    for work in (CHECKPOINTS, PROGRESSIVE):
        shutil.rmtree(run.out / work, ignore_errors=True)
    for name in (RESULTS_NAME, PREDICTIONS_NAME):
        (run.out / name).unlink(missing_ok=True)
    write_json_atomic(settings_path, run.settings())


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())
