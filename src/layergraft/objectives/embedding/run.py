"""A sentence encoder's compress run: graft a sentence-transformers model, heal and / or
train it on the teacher's embeddings of unlabeled text, and measure how close it stays.

The student is saved in the run folder itself (sentence-transformers layout plus the graft
manifest). Training is not checkpointed: an interrupted run trains again (the teacher's
embeddings are cached). Healing (`--heal STEPS`) runs right after surgery, as strategy
`heal` alone or before `distill` (charged against its budget).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from layergraft.errors import LayergraftError
from layergraft.objectives.base import Objective, Run, Session
from layergraft.objectives.runs import CHECKPOINTS
from layergraft.objectives.strategies import steps_after_heal

HELD_OUT_MAX = 1000  # held-out sentences for the mean cosine and the speed check
NEEDS_ANALYSIS = ("graft", "drop-similar")


@dataclass
class EmbeddingRun(Run):
    """One compress run of a sentence encoder: `identity` is its settings."""

    out: Path
    identity: dict = field(default_factory=dict)
    objective: Objective | None = None
    speed: bool = True
    path: str = ""  # the teacher's folder
    corpus: list = field(default_factory=list)
    resolved: object = None
    options: object = None
    analysis: object = None
    training: object = None
    budget: object = None
    heal: object = None
    cache_dir: object = None
    progress: bool = True

    @property
    def runtime(self):
        return self.resolved

    def settings(self) -> dict:
        return self.identity

    def load(self, state) -> EmbeddingSession:
        from layergraft.embeddings.model import load_embedding_model

        teacher, folder = load_embedding_model(self.path, self.runtime.device)  # bad weights:
        return EmbeddingSession(self, teacher, folder)  # refused, nothing written


class EmbeddingSession(Session):
    """A sentence encoder run's loaded teacher and texts (train and a held-out tenth)."""

    importance_loss = "embedding"

    def __init__(self, run: EmbeddingRun, teacher, folder):
        self.run, self.teacher, self.folder = run, teacher, folder
        self.train, self.held_out = split_texts(run.corpus)

    def teacher_outputs(self, data: list[str]):
        from layergraft.embeddings.objective import teacher_embeddings

        return teacher_embeddings(self.teacher, data, max_length=self.run.training.max_length,
                                  cache_dir=self.run.cache_dir)

    def distill_loss(self, student, manifest):
        from layergraft.embeddings.objective import make_loss

        return make_loss(student, self.run.training.cosine_weight)

    def heal(self, student, manifest) -> dict:
        from layergraft.embeddings.heal import heal_embedding

        run = self.run
        return heal_embedding(student, self.teacher, self.train, manifest, run.heal,
                              runtime=run.runtime, train_batch=run.training.batch_size,
                              max_length=run.training.max_length, cache_dir=run.cache_dir,
                              seed=run.identity["seed"])

    def build(self):
        from layergraft.embeddings.model import (
            analyze_embedding_model,
            graft_embedding_model,
            transformer_of,
        )
        from layergraft.surgery.arch import num_layers
        from layergraft.surgery.plan import Plan
        from layergraft.utils import num_parameters

        run, settings, teacher = self.run, self.run.identity, self.teacher
        transformer = transformer_of(teacher)
        depth = num_layers(transformer.config)
        graft_inputs = {}
        if settings["method"] in NEEDS_ANALYSIS:
            graft_inputs = analyze_embedding_model(teacher, self.train, run.analysis,
                                                   run.training.max_length,
                                                   run.cache_dir).graft_inputs()
        plan = Plan.from_spans(depth, settings["pairs"]) if settings["pairs"] else None
        student, manifest = graft_embedding_model(
            teacher, layers=settings["layers"], plan=plan, method=settings["method"],
            options=run.options, seed=settings["seed"], judge=self._judge(), **graft_inputs)
        healed, trained = self._train(student, manifest)
        record = {
            "settings": settings, "objective": "embedding", "teacher_layers": depth,
            "layers": settings["layers"], "modules": list(self.folder.modules),
            "pooling": self.folder.pooling, "dimension": student.get_embedding_dimension(),
            "parameters": {"teacher": num_parameters(transformer),
                           "student": num_parameters(transformer_of(student))},
            "heal": healed, "training": trained}
        return student, manifest, record

    def evaluate(self, student) -> dict:
        from layergraft.embeddings.fidelity import evaluate_embeddings

        settings = self.run.identity
        return evaluate_embeddings(student, self.teacher, held_out=self.held_out,
                                   eval_tasks=settings["eval_tasks"],
                                   ood=settings.get("ood", True), cache_dir=self.run.cache_dir,
                                   progress=self.run.progress)

    def speed(self, student, measure_speed) -> dict:
        from layergraft.embeddings.fidelity import say
        from layergraft.embeddings.speed import embedding_speed

        say(self.run.progress, f"speed of student and teacher on {len(self.held_out)} "
                               "held-out texts")
        return embedding_speed(self.teacher, student, self.held_out,
                               measure_speed=measure_speed,
                               max_length=self.run.training.max_length,
                               precision=self.run.runtime.precision)

    def save(self, student, manifest) -> None:
        from layergraft.embeddings.model import save_embedding_model

        save_embedding_model(student, manifest, self.run.out)

    def _judge(self):
        """The span-error judge of `--choose-by reconstruction` on the training texts."""
        options = self.run.options
        if not options.by_reconstruction:
            return None
        from layergraft.embeddings.heal import encoded_texts
        from layergraft.embeddings.model import transformer_of
        from layergraft.training.calibrate import ReconstructionJudge, calibration_texts

        tokenizer = self.teacher[0].tokenizer
        texts = calibration_texts(encoded_texts(tokenizer, self.train,
                                                self.run.training.max_length),
                                  options.calibration)
        return ReconstructionJudge(transformer_of(self.teacher), texts, tokenizer,
                                   cache_dir=self.run.cache_dir)

    def _train(self, student, manifest) -> tuple[dict | None, dict | None]:
        """(heal record, training record) of the student, healed and / or trained in place."""
        from layergraft.embeddings.objective import train_embedding

        run, settings = self.run, self.run.identity
        healed = trained = None
        charge = 0
        if settings["heal"] is not None:
            healed = self.heal(student, manifest)
            charge = healed["charge"]
        if settings["strategy"] == "distill":
            targets = self.teacher_outputs(self.train)
            steps = steps_after_heal(run.budget.steps(len(self.train), run.training.batch_size),
                                     charge, settings["strategy"])
            trained = train_embedding(student, self.train, targets, steps=steps,
                                      config=run.training, work_dir=run.out / CHECKPOINTS,
                                      seed=settings["seed"], device=str(run.runtime.device),
                                      precision=run.runtime.precision,
                                      loss=self.distill_loss(student, manifest))
        shutil.rmtree(run.out / CHECKPOINTS, ignore_errors=True)
        return healed, trained


def training_texts(texts, task, text_column) -> tuple[list[str], dict]:
    """(texts, how the settings name them): a file, or the train split of a task."""
    from layergraft.embeddings.texts import read_texts, task_texts
    from layergraft.utils import content_fingerprint

    if texts is not None:
        return (read_texts(texts, text_column),
                {"file": str(texts), "column": text_column,
                 "content": content_fingerprint(texts)})
    if task is None:
        raise LayergraftError("--objective embedding needs training text: give --texts FILE "
                              "or --task TASK")
    from layergraft.data.tasks import as_source

    source = as_source(task)
    return (task_texts(source.load()),
            {"task": asdict(source), "content": content_fingerprint(source.name)})


def split_texts(corpus: list[str]) -> tuple[list[str], list[str]]:
    """(train, held-out): a fixed tenth of the texts (1 to HELD_OUT_MAX) is held out."""
    if len(corpus) < 2:
        raise LayergraftError("--objective embedding needs at least 2 texts (one is held out)")
    order = list(range(len(corpus)))
    random.Random(0).shuffle(order)
    held = min(max(1, len(corpus) // 10), HELD_OUT_MAX)
    return ([corpus[i] for i in sorted(order[held:])], [corpus[i] for i in sorted(order[:held])])
