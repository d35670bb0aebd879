"""A student's embeddings next to its teacher's: fidelity, and what both are good for.

One record holds, for student and teacher side by side, the mean cosine to the teacher on
held-out texts, the top-10 neighbour agreement in a large corpus, and the downstream value of
frozen embeddings on each evaluation task (train -> test): a logistic probe and a kNN vote
for a classification task, ridge-regression Spearman for a regression task, each with the
teacher's value and the retention (student / teacher). The neighbour corpus is the
out-of-domain sets of the first task that names any (movie-sentiment: tweets, Amazon and
NYT snippets, 13,098 sentences), else its dev + test texts. Every text list is embedded
once per model: movie-sentiment and movie-rating share their splits, so they share the work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch

NEIGHBOURS = 10
CORPUS_MAX = 20000
DEFAULT_EVAL_TASKS = ("movie-sentiment", "movie-rating")
TEACHER, STUDENT = "teacher", "student"


class EmbeddingMemo:
    """Each model's embeddings of each list of texts, computed once; the teacher's are also
    kept on disk, under `cache_dir` or the default cache folder (every run of a grid
    evaluates against the same teacher on the same ~25k sentences)."""

    def __init__(self, models: dict, cache_dir: str | os.PathLike | None = None):
        self.models, self.cache_dir = models, cache_dir
        self.done: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    def __call__(self, name: str, texts: Sequence[str]) -> torch.Tensor:
        from layergraft.embeddings.model import embed
        from layergraft.embeddings.objective import teacher_embeddings

        key = (name, tuple(texts))
        if key not in self.done:
            model = self.models[name]
            self.done[key] = (
                teacher_embeddings(model, list(texts), max_length=model.max_seq_length,
                                   cache_dir=self.cache_dir)
                if name == TEACHER else embed(model, list(texts)))
        return self.done[key]


def evaluate_embeddings(student, teacher=None, *, held_out: Sequence[str] | None = None,
                        eval_tasks: Sequence[str] = DEFAULT_EVAL_TASKS, ood: bool = True,
                        cache_dir: str | os.PathLike | None = None,
                        progress: bool = False) -> dict:
    """The record described above; without a `teacher` only the student's own downstream
    values (nothing to be faithful to). `ood=False` takes the neighbour corpus from the first
    task's dev + test instead of its out-of-domain sets (as a classifier's `--no-ood` skips
    them); no `eval_tasks` leaves the held-out mean cosine alone. `cache_dir` keeps the
    teacher's embeddings; `progress` says each part on stderr as it starts."""
    from layergraft.data.tasks import as_source

    models = {STUDENT: student, **({TEACHER: teacher} if teacher is not None else {})}
    memo = EmbeddingMemo(models, cache_dir)
    record: dict = {}
    if held_out and teacher is not None:
        say(progress, f"mean cosine to the teacher on {len(held_out)} held-out texts")
        record["held_out"] = len(held_out)
        record["mean_cosine"] = _cosine(memo, held_out)
    if eval_tasks:
        say(progress, f"loading the evaluation tasks {', '.join(eval_tasks)}")
    tasks = [as_source(name).load() for name in eval_tasks]
    if tasks and teacher is not None:
        corpus, sources = neighbour_corpus(tasks, ood)
        say(progress, f"top-{NEIGHBOURS} neighbours among {len(corpus)} sentences of "
                      f"{', '.join(sources)}")
        record["neighbours"] = {"corpus": len(corpus), "sources": sources, "k": NEIGHBOURS,
                                "agreement": _agreement(memo, corpus),
                                "mean_cosine": _cosine(memo, corpus)}
    downstream = {}
    for task in tasks:
        say(progress, f"frozen-embedding probes on {task.spec.name} (train -> test)")
        if measures := task_measures(memo, task):
            downstream[task.spec.name] = measures
    if downstream:
        record["downstream"] = downstream
    return record


def say(progress: bool, part: str) -> None:
    """One stderr line as an evaluation part starts (each can take minutes on a CPU)."""
    if progress:
        print(f"evaluating: {part}", file=sys.stderr, flush=True)


def neighbour_corpus(tasks: Sequence, ood: bool = True) -> tuple[list[str], list[str]]:
    """(texts, the sets they come from): see the module's docstring; without `ood`, the
    first task's dev + test."""
    from layergraft.embeddings.texts import task_texts

    for task in tasks if ood else ():
        if task.spec.ood:
            others = task.ood()
            texts = [t for other in others.values() for t in task_texts(other, ("test",))]
            return texts[:CORPUS_MAX], list(others)
    task = tasks[0]
    splits = tuple(s for s in ("dev", "test") if s in task.splits)
    return task_texts(task, splits)[:CORPUS_MAX], [f"{task.spec.name}/{s}" for s in splits]


def task_measures(memo: EmbeddingMemo, task) -> dict:
    """{measure: {teacher, student, retention}} of one task (empty when it has no labelled
    train and test splits)."""
    from layergraft.embeddings.evaluate import knn_accuracy, probe_accuracy, ridge_spearman

    if not (task.labeled("train") and task.labeled("test")):
        return {}
    train, test = task.splits["train"], task.splits["test"]
    fits = ({"ridge_spearman": ridge_spearman} if task.spec.is_regression
            else {"probe_accuracy": probe_accuracy, "knn_accuracy": knn_accuracy})
    measures = {}
    for measure, fit in fits.items():
        values = {name: fit(memo(name, train["text"]), train["label"],
                            memo(name, test["text"]), test["label"]) for name in memo.models}
        measures[measure] = {**values, "retention": _retention(values)}
    return measures


def _retention(values: dict) -> float | None:
    """student / teacher; None without a teacher or when the teacher scores <= 0 (a ratio
    to a useless teacher means nothing)."""
    if values.get(TEACHER) is None or values[TEACHER] <= 0:
        return None
    return values[STUDENT] / values[TEACHER]


def _cosine(memo: EmbeddingMemo, texts: Sequence[str]) -> float:
    from layergraft.embeddings.evaluate import mean_cosine

    return mean_cosine(memo(STUDENT, texts), memo(TEACHER, texts))


def _agreement(memo: EmbeddingMemo, texts: Sequence[str]) -> float:
    from layergraft.embeddings.evaluate import neighbour_agreement

    return neighbour_agreement(memo(STUDENT, texts), memo(TEACHER, texts), NEIGHBOURS)


def evaluate_folder(model: str, teacher: str | None = None, *,
                    eval_tasks: Sequence[str] = DEFAULT_EVAL_TASKS,
                    texts: Sequence[str] | None = None, device: str = "cpu") -> dict:
    """`evaluate --objective embedding`: a saved sentence-transformers model against
    `teacher` (default: the teacher its compress run names in results.json, if any).
    `texts` are held-out sentences for the mean cosine."""
    from layergraft.embeddings.model import load_embedding_model, transformer_of
    from layergraft.models import resolve_model
    from layergraft.surgery.arch import num_layers

    student, folder = load_embedding_model(resolve_model(model), device)
    teacher = teacher or _teacher_of(folder.path)
    reference = load_embedding_model(resolve_model(teacher), device)[0] if teacher else None
    record = {"model": str(model), "teacher": teacher,
              "layers": num_layers(transformer_of(student).config)}
    if reference is not None:
        record["teacher_layers"] = num_layers(transformer_of(reference).config)
    return {**record, **evaluate_embeddings(student, reference, held_out=texts,
                                            eval_tasks=eval_tasks, progress=True)}


def _teacher_of(path) -> str | None:
    import json

    results = path / "results.json"
    if not results.is_file():
        return None
    return json.loads(results.read_text()).get("settings", {}).get("teacher")
