"""`compress_embedding`: graft a sentence-embedding model, train it on the teacher's
embeddings of unlabeled text, and measure how close it stays (behind
`layergraft compress --objective embedding`).

A run folder follows the classifier runs' rules (`layergraft.pipeline.runs`): a finished
results.json with equal settings is returned as is, other settings are refused without
--overwrite. The student is saved in the folder itself (sentence-transformers layout plus
the graft manifest). Training is not checkpointed: an interrupted run trains again (the
teacher's embeddings are cached). Healing (`--heal STEPS`) runs right after surgery,
as strategy `heal` alone or before `distill` (charged against its budget).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from layergraft.embeddings.fidelity import DEFAULT_EVAL_TASKS
from layergraft.errors import LayergraftError

STRATEGIES = ("none", "heal", "distill")
HELD_OUT_MAX = 1000  # held-out sentences for the mean cosine and the speed check
NEEDS_ANALYSIS = ("graft", "drop-similar")


@dataclass
class EmbeddingRun:
    out: Path
    identity: dict = field(default_factory=dict)

    def settings(self) -> dict:
        return self.identity


def compress_embedding(
    teacher: str, *, layers: int, out: str | os.PathLike, texts: str | os.PathLike | None = None,
    task=None, text_column: str | None = None, method: str = "graft",
    strategy: str = "distill", budget: str = "1 epoch", seed: int = 0, device: str = "auto",
    precision: str = "auto", graft_options=None, analysis=None, training=None,
    cosine_weight: float = 0.0, pairs: str | None = None,
    eval_tasks: Sequence[str] = DEFAULT_EVAL_TASKS, cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False, refit_samples: int = 0, heal=None, speed: bool = True,
    ood: bool = True, dry_run: bool = False, replace_other_runs: bool = False,
    progressive_schedule: str = "per-stage", progress: bool = True, **ignored,
) -> dict:
    """Compress the sentence-transformers model `teacher` to `layers` layers; save the student
    to `out` and return the results record (also `out/results.json`).

    Training text is `texts` (a file: one sentence a line, or the `text_column` of a CSV /
    TSV / JSONL file) or the train split of `task`. `method` is any surgery method; graft
    and drop-similar are measured on the teacher with the "embedding" importance loss.
    `strategy` "distill" trains with the embedding MSE (plus `cosine_weight` times the
    cosine distance) for `budget`; "heal" is surgery + healing only (`heal`, a HealConfig,
    which may also precede "distill"); "none" is surgery only. The record holds
    `layergraft.embeddings.fidelity`'s evaluation on `eval_tasks` (teacher side by side;
    none: the held-out mean cosine alone; `ood=False`: neighbours among the first task's
    dev + test, not its out-of-domain sets) and, with `speed`, the interleaved student /
    teacher throughput; `progress` says each evaluation part on stderr. `training` (a
    TrainConfig) supplies learning rate, batch size and max length; the classifier-only
    options (distill, ...) are ignored. `dry_run` returns {"status": ...} only.
    """
    from layergraft.embeddings.objective import EmbeddingTraining
    from layergraft.models import resolve_model
    from layergraft.pipeline.runs import finished_results, run_status, start_fresh_or_resume
    from layergraft.pipeline.strategies import check_request, normalized_spans
    from layergraft.runtime import Runtime
    from layergraft.scoring.analysis import AnalysisSettings
    from layergraft.surgery.methods import TAKES_OPTIONS, GraftOptions
    from layergraft.training.budget import Budget
    from layergraft.utils import content_fingerprint

    if strategy not in STRATEGIES:
        raise LayergraftError(f"strategy '{strategy}' does not apply to --objective embedding: "
                              f"choose {' or '.join(STRATEGIES)}")
    if refit_samples:
        raise LayergraftError("--refit is not available with --objective embedding: use --heal")
    check_request(method, strategy, pairs, heal, progressive_schedule, graft_options)
    from layergraft.embeddings.model import read_folder

    path = resolve_model(teacher)
    read_folder(path)  # a one-line refusal before anything loads
    corpus, source = _training_texts(texts, task, text_column)
    runtime = Runtime.resolve(device, precision)
    options = graft_options or GraftOptions()
    analysis = analysis or AnalysisSettings()
    config = EmbeddingTraining(cosine_weight=cosine_weight, **(
        {"learning_rate": training.learning_rate, "batch_size": training.batch_size,
         "max_length": training.max_length} if training is not None else {}))
    budget = Budget.parse(budget)
    identity = {
        "objective": "embedding", "teacher": str(teacher),
        "teacher_content": content_fingerprint(path), "texts": source,
        "layers": int(layers), "method": method, "strategy": strategy, "seed": seed,
        "precision": runtime.precision,
        "budget": str(budget) if strategy == "distill" else None,
        "graft_options": options.to_dict() if method in TAKES_OPTIONS else None,
        "analysis": ({"importance": analysis.importance, "samples": analysis.samples,
                      "normalize": analysis.normalize} if method in NEEDS_ANALYSIS else None),
        "training": config.to_dict() if strategy == "distill" else None,
        "pairs": normalized_spans(pairs), "eval_tasks": list(eval_tasks),
        "heal": heal.to_dict() if heal is not None and heal.steps else None, "speed": speed,
        # only when off, so that the runs made before the option keep their settings
        **({} if ood else {"ood": False}),
    }
    run = EmbeddingRun(Path(out), identity)
    if dry_run:
        return {"status": run_status(run)}
    finished = finished_results(run, overwrite)
    if finished is not None:
        return finished
    from layergraft.embeddings.model import load_embedding_model

    loaded = load_embedding_model(path, runtime.device)  # bad weights: refused, nothing written
    run.out.mkdir(parents=True, exist_ok=True)
    start_fresh_or_resume(run, overwrite, replace_other_runs)
    return _execute(run, loaded, corpus, runtime, options, analysis, config, budget, heal,
                    cache_dir, progress)


def _training_texts(texts, task, text_column) -> tuple[list[str], dict]:
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


def _execute(run: EmbeddingRun, loaded, corpus: list[str], runtime, options, analysis,
             config, budget, heal_config, cache_dir, progress: bool = True) -> dict:
    from layergraft.embeddings.fidelity import evaluate_embeddings, say
    from layergraft.embeddings.model import (
        analyze_embedding_model,
        graft_embedding_model,
        save_embedding_model,
        transformer_of,
    )
    from layergraft.embeddings.speed import embedding_speed
    from layergraft.surgery.arch import num_layers
    from layergraft.surgery.plan import Plan
    from layergraft.utils import num_parameters, versions, write_json_atomic

    settings = run.settings()
    teacher, folder = loaded
    train, held_out = _split(corpus)
    transformer = transformer_of(teacher)
    depth = num_layers(transformer.config)
    graft_inputs = {}
    if settings["method"] in NEEDS_ANALYSIS:
        graft_inputs = analyze_embedding_model(teacher, train, analysis, config.max_length,
                                               cache_dir).graft_inputs()
    plan = Plan.from_spans(depth, settings["pairs"]) if settings["pairs"] else None
    student, manifest = graft_embedding_model(
        teacher, layers=settings["layers"], plan=plan, method=settings["method"],
        options=options, seed=settings["seed"],
        judge=_judge(teacher, train, options, config.max_length, cache_dir), **graft_inputs)
    healed, trained = _train(run, teacher, student, manifest, train, runtime, config, budget,
                             heal_config, cache_dir)
    save_embedding_model(student, manifest, run.out)
    record = {
        "settings": settings, "objective": "embedding", "teacher_layers": depth,
        "layers": settings["layers"], "modules": list(folder.modules),
        "pooling": folder.pooling, "dimension": student.get_embedding_dimension(),
        "parameters": {"teacher": num_parameters(transformer),
                       "student": num_parameters(transformer_of(student))},
        "heal": healed, "training": trained, "runtime": runtime.record(),
        "versions": versions(),
        **evaluate_embeddings(student, teacher, held_out=held_out,
                              eval_tasks=settings["eval_tasks"],
                              ood=settings.get("ood", True), cache_dir=cache_dir,
                              progress=progress),
    }
    if settings["speed"]:
        say(progress, f"speed of student and teacher on {len(held_out)} held-out texts")
        record["speed"] = embedding_speed(teacher, student, held_out,
                                          max_length=config.max_length,
                                          precision=runtime.precision)
    write_json_atomic(run.out / "results.json", record)
    return record


def _judge(teacher, train: list[str], options, max_length: int, cache_dir):
    """The span-error judge of `--choose-by reconstruction` on the training texts."""
    if not options.by_reconstruction:
        return None
    from layergraft.embeddings.heal import encoded_texts
    from layergraft.embeddings.model import transformer_of
    from layergraft.training.calibrate import ReconstructionJudge, calibration_texts

    tokenizer = teacher[0].tokenizer
    texts = calibration_texts(encoded_texts(tokenizer, train, max_length), options.calibration)
    return ReconstructionJudge(transformer_of(teacher), texts, tokenizer, cache_dir=cache_dir)


def _train(run: EmbeddingRun, teacher, student, manifest, train: list[str], runtime, config,
           budget, heal_config, cache_dir) -> tuple[dict | None, dict | None]:
    """(heal record, training record) of the student, healed and / or trained in place."""
    from layergraft.embeddings.heal import heal_embedding
    from layergraft.embeddings.objective import teacher_embeddings, train_embedding
    from layergraft.pipeline.runs import CHECKPOINTS
    from layergraft.pipeline.strategies import steps_after_heal

    settings = run.settings()
    healed = trained = None
    charge = 0
    if settings["heal"] is not None:
        healed = heal_embedding(student, teacher, train, manifest, heal_config,
                                runtime=runtime, train_batch=config.batch_size,
                                max_length=config.max_length, cache_dir=cache_dir,
                                seed=settings["seed"])
        charge = healed["charge"]
    if settings["strategy"] == "distill":
        targets = teacher_embeddings(teacher, train, max_length=config.max_length,
                                     cache_dir=cache_dir)
        steps = steps_after_heal(budget.steps(len(train), config.batch_size), charge,
                                 settings["strategy"])
        trained = train_embedding(student, train, targets, steps=steps, config=config,
                                  work_dir=run.out / CHECKPOINTS, seed=settings["seed"],
                                  device=str(runtime.device), precision=runtime.precision)
    shutil.rmtree(run.out / CHECKPOINTS, ignore_errors=True)
    return healed, trained


def _split(corpus: list[str]) -> tuple[list[str], list[str]]:
    """(train, held-out): a fixed tenth of the texts (1 to HELD_OUT_MAX) is held out."""
    if len(corpus) < 2:
        raise LayergraftError("--objective embedding needs at least 2 texts (one is held out)")
    order = list(range(len(corpus)))
    random.Random(0).shuffle(order)
    held = min(max(1, len(corpus) // 10), HELD_OUT_MAX)
    return ([corpus[i] for i in sorted(order[held:])], [corpus[i] for i in sorted(order[:held])])
