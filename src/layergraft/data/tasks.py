"""Tasks declared as data: one frozen spec per task, one loader per data source.

Every task, whatever its source, loads into the same shape: a ``datasets.DatasetDict`` with
splits ``train`` / ``dev`` / ``test`` and standard columns ``text``, optional ``text_pair`` and
``label`` (int64 class ids, or float32 for regression). A split whose labels are hidden (GLUE's
test sets) has no ``label`` column. Sources:

- ``glue``: the nine GLUE tasks through ``datasets.load_dataset("nyu-mll/glue", config)``
  (needs a network the first time); MNLI-mismatched is MNLI with other dev/test splits.
- ``hutto``: the offline movie-review sentences of :mod:`layergraft.data.movies` (binary sentiment
  from the sign of the human rating, or regression on the rating) and three out-of-domain
  sentiment sets (tweets, product reviews, editorials) that only have a test split.
- ``file``: a user's CSV / TSV / JSONL file, or a folder of ``train.*``, ``dev.*`` (or
  ``validation.*``) and optional ``test.*`` files (read by :mod:`layergraft.data.local`).

:class:`TaskSource` is a task as a command names it: a name or path plus the column options a
local file may need.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import datasets
import numpy as np

from layergraft.data import movies
from layergraft.data.metrics import METRICS
from layergraft.errors import LayergraftError

logger = logging.getLogger(__name__)

GLUE_HUB_ID = "nyu-mll/glue"
SPLITS = ("train", "dev", "test")
TEXT, PAIR, LABEL = "text", "text_pair", "label"


@dataclass(frozen=True)
class TaskSpec:
    """Everything layergraft needs to know about a task, with no code in it.

    ``splits`` maps layergraft's split names to the source's (GLUE calls dev ``validation``);
    ``metrics`` are :data:`layergraft.data.metrics.METRICS` names, the first being the primary one
    (checkpoint selection, summaries); ``group`` is the benchmark task a variant counts as in an
    average (MNLI-mismatched counts as MNLI); ``ood`` names out-of-domain tasks that evaluate a
    model trained on this one.
    """

    name: str
    num_labels: int
    metrics: tuple[str, ...]
    source: str = "file"
    dataset: str | None = None
    config: str | None = None
    text_column: str = TEXT
    pair_column: str | None = None
    label_column: str = LABEL
    label_names: tuple[str, ...] = ()
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("dev", "dev"), ("test", "test"))
    eval_splits: tuple[str, ...] = ("dev",)
    group: str | None = None
    ood: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if not self.metrics or unknown:
            raise ValueError(f"task {self.name}: unknown metrics {unknown}; known: {list(METRICS)}")

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


@dataclass
class Task:
    """A spec plus its data in the standard layout (see the module docstring)."""

    spec: TaskSpec
    splits: datasets.DatasetDict
    notice: str | None = field(default=None, repr=False)

    def labeled(self, split: str) -> bool:
        return split in self.splits and LABEL in self.splits[split].column_names

    def ood(self) -> dict[str, Task]:
        """The out-of-domain evaluation tasks of this task, loaded (empty when it has none)."""
        return {name: load_task(name) for name in self.spec.ood}


def _glue(name: str, text: str, pair: str | None, label_names: Sequence[str],
          metrics: tuple[str, ...] = ("accuracy",), **overrides) -> TaskSpec:
    fields = dict(
        name=name, num_labels=max(len(label_names), 1), metrics=metrics, source="glue",
        dataset=GLUE_HUB_ID, config=name, text_column=text, pair_column=pair,
        label_names=tuple(label_names),
        splits=(("train", "train"), ("dev", "validation"), ("test", "test")),
    )
    return TaskSpec(**{**fields, **overrides})


_MNLI = _glue(
    "mnli", "premise", "hypothesis", ("entailment", "neutral", "contradiction"),
    splits=(("train", "train"), ("dev", "validation_matched"), ("test", "test_matched")),
    description="MultiNLI, matched dev",
)
_HUTTO_OOD = ("tweets-sentiment", "products-sentiment", "editorials-sentiment")
_SENTIMENT = TaskSpec(
    name="movie-sentiment", num_labels=2, metrics=("accuracy", "macro_f1"), source="hutto",
    dataset="movies", label_names=("negative", "positive"), ood=_HUTTO_OOD,
    description="offline: Rotten Tomatoes sentences, positive iff mean human rating > 0",
)

TASKS: Mapping[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue("cola", "sentence", None, ("unacceptable", "acceptable"), ("matthews",)),
        _glue("sst2", "sentence", None, ("negative", "positive")),
        _glue("mrpc", "sentence1", "sentence2", ("not_equivalent", "equivalent"),
              ("f1", "accuracy")),
        _glue("stsb", "sentence1", "sentence2", (), ("pearson", "spearman")),
        _glue("qqp", "question1", "question2", ("not_duplicate", "duplicate"),
              ("f1", "accuracy")),
        _MNLI,
        replace(_MNLI, name="mnli-mm", group="mnli", description="MultiNLI, mismatched dev",
                splits=(("train", "train"), ("dev", "validation_mismatched"),
                        ("test", "test_mismatched"))),
        _glue("qnli", "question", "sentence", ("entailment", "not_entailment")),
        _glue("rte", "sentence1", "sentence2", ("entailment", "not_entailment")),
        _glue("wnli", "sentence1", "sentence2", ("not_entailment", "entailment")),
        _SENTIMENT,
        replace(_SENTIMENT, name="movie-rating", num_labels=1, metrics=("pearson", "spearman"),
                label_names=(), ood=(),
                description="offline: Rotten Tomatoes sentences, mean human rating -4..+4"),
        *(
            replace(_SENTIMENT, name=name, dataset=name.split("-")[0], splits=(("test", "test"),),
                    eval_splits=("test",), ood=(),
                    description=f"offline out-of-domain test set: {name.split('-')[0]}, "
                    "positive iff mean human rating > 0")
            for name in _HUTTO_OOD
        ),
    )
}
ALIASES: Mapping[str, str] = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE score: each task's score is the mean of its metrics, variants of one task
    (MNLI matched / mismatched) are averaged into that task, then tasks are averaged equally.

    ``results`` maps task names to metric dicts (extra metrics a task does not list are ignored).
    Leave out WNLI for the BERT-paper convention of 8 tasks.
    """
    grouped: dict[str, list[float]] = {}
    for name, values in results.items():
        spec = get_spec(name)
        missing = [m for m in spec.metrics if m not in values]
        if missing:
            raise LayergraftError(f"results for {name} lack its metrics {', '.join(missing)}")
        score = float(np.mean([values[m] for m in spec.metrics]))
        grouped.setdefault(spec.group or spec.name, []).append(score)
    if not grouped:
        raise LayergraftError("no task results to average")
    return float(np.mean([np.mean(scores) for scores in grouped.values()]))


def get_spec(name: str) -> TaskSpec:
    """The registered spec of a task name (aliases accepted), or an error listing the names."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in TASKS:
        return TASKS[key]
    close = difflib.get_close_matches(key, [*TASKS, *ALIASES], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise LayergraftError(
        f"unknown task '{name}'{hint}; known tasks: {', '.join(TASKS)}; "
        "or give a CSV / TSV / JSONL file or a folder of them"
    )


def load_task(
    name_or_path: str,
    *,
    text_column: str | None = None,
    pair_column: str | None = None,
    label_column: str | None = None,
    regression: bool | None = None,
    seed: int = 0,
) -> Task:
    """Load a registered task or a local file / folder into the standard layout.

    The column and ``regression`` options apply to local files only (registered tasks know
    their columns); ``seed`` fixes how a single local file is split into train / dev / test.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        from layergraft.data.local import load_local

        columns = {TEXT: text_column, PAIR: pair_column, LABEL: label_column}
        task = load_local(path, columns, regression, seed)
    else:
        if any(sep in name_or_path for sep in "/\\") or Path(name_or_path).suffix:
            raise LayergraftError(f"no such file or folder: {name_or_path}")
        spec = get_spec(name_or_path)
        task = Task(spec, _LOADERS[spec.source](spec))
    if task.notice:
        logger.warning(task.notice)
    return task


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide datasets' progress bars for quick in-memory steps (casts, small local files)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def standardise(raw: datasets.Dataset, spec: TaskSpec) -> datasets.Dataset:
    """Rename a split's columns to ``text`` / ``text_pair`` / ``label``, drop the rest, and drop
    ``label`` where every label is hidden (-1, as in GLUE's test sets)."""
    columns = {spec.text_column: TEXT, spec.pair_column: PAIR, spec.label_column: LABEL}
    keep = {source: target for source, target in columns.items() if source in raw.column_names}
    data = raw.select_columns(list(keep)).rename_columns(
        {s: t for s, t in keep.items() if s != t}
    )
    if LABEL not in data.column_names:
        return data
    if np.all(np.asarray(data[LABEL]) == -1):
        return data.remove_columns(LABEL)
    target = datasets.Value("float32" if spec.is_regression else "int64")
    if data.features[LABEL] == target:
        return data
    with quiet():
        return data.cast_column(LABEL, target)


def _load_hub(spec: TaskSpec) -> datasets.DatasetDict:
    try:
        raw = datasets.load_dataset(spec.dataset, spec.config)
    except ConnectionError as error:
        offline = ", ".join(n for n, s in TASKS.items() if s.source == "hutto"
                            and "train" in dict(s.splits))
        raise LayergraftError(
            f"task {spec.name} downloads {spec.dataset} from the Hugging Face hub, which is "
            f"unreachable ({error}); use a local CSV/TSV/JSONL file or an offline task ({offline})"
        ) from None
    return datasets.DatasetDict(
        {ours: standardise(raw[theirs], spec) for ours, theirs in spec.splits if theirs in raw}
    )


def _load_hutto(spec: TaskSpec) -> datasets.DatasetDict:
    """Binary tasks label a sentence positive iff its rating is > 0 and drop neutral (0)
    ratings; regression tasks keep every sentence and predict the rating itself."""
    corpus = movies.load_corpus(spec.dataset)
    dtype = datasets.Value("float32" if spec.is_regression else "int64")
    out = {}
    for ours, theirs in spec.splits:
        data, ratings = corpus[theirs], np.asarray(corpus[theirs]["rating"])
        if spec.is_regression:
            labels = ratings.astype(np.float32)
        else:
            keep = np.flatnonzero(ratings != 0)
            data, labels = data.select(keep), (ratings[keep] > 0).astype(np.int64)
        with quiet():
            out[ours] = standardise(data.add_column(LABEL, labels, feature=dtype), spec)
    return datasets.DatasetDict(out)


_LOADERS = {"glue": _load_hub, "hutto": _load_hutto}


def check_model_fits(spec: TaskSpec, model_config) -> None:
    """Refuse a model whose head cannot score this task: regression vs classification, or a
    different number of classes (labels outside the model's range)."""
    heads = int(model_config.num_labels)
    if spec.is_regression and heads != 1:
        raise LayergraftError(
            f"task {spec.name} is regression (one output) but the model has a {heads}-class "
            "head: fine-tune a model for this task first (layergraft finetune)"
        )
    if not spec.is_regression and heads == 1:
        raise LayergraftError(
            f"task {spec.name} is classification ({spec.num_labels} classes) but the model has "
            "a regression head: use a classifier fine-tuned on it, or pass --regression for "
            "a local file with numeric labels"
        )
    if heads != spec.num_labels:
        raise LayergraftError(
            f"task {spec.name} has labels 0..{spec.num_labels - 1} but the model predicts "
            f"0..{heads - 1}: use a model fine-tuned on this task"
        )


@dataclass(frozen=True)
class TaskSource:
    """A task name or data path plus the column overrides a local file may need."""

    name: str
    text_column: str | None = None
    pair_column: str | None = None
    label_column: str | None = None
    regression: bool | None = None
    seed: int = 0

    def load(self) -> Task:
        return load_task(self.name, text_column=self.text_column, pair_column=self.pair_column,
                         label_column=self.label_column, regression=self.regression,
                         seed=self.seed)


def as_source(task: str | TaskSource) -> TaskSource:
    """A task name or data path as a TaskSource with no column overrides; a TaskSource as is."""
    return TaskSource(task) if isinstance(task, str) else task
