"""A zero-shot multiple-choice score through lm-evaluation-harness, on a task built from local
data, fully offline.

lm-eval's own tasks download their data from the hub, so this builds one from the offline
Hutto & Gilbert sentiment files (`layergraft.data.movies`): each prompt is
``Review: <snippet>\\nSentiment:`` and the choices are `` negative`` / `` positive`` (lm-eval
puts its target delimiter, one space, before a choice); the answer is the sign of the human
rating (zero-rated snippets dropped). The snippets come from the corpus's held-out ``test``
split (for the movie snippets the split that `movie-text` training never sees), balanced:
`per_class` of each polarity, picked by a salted hash of the id, so the task is the same on
every run. Chance is 50%. The task (YAML + JSONL) is written to a folder and read through
``include_path`` with lm-eval's defaults left out, as ``lm-eval --include_path`` would; the
JSONL goes through the `datasets` json builder, which needs no network. The model is an
already-loaded PyTorch model wrapped in lm-eval's ``HFLM``: the teacher and the student are
scored the same way, with no export.

Measured (SmolLM2-135M-Instruct, fp32, one CPU thread, 95 s for 400 examples): 76.8 +- 2.1%
on the movie snippets and 71.3 +- 2.3% on the NYT editorial snippets (per_class 200): the
task is well above chance for the teacher, so a student's loss shows.

Needs the optional extra ``pip install 'layergraft[lm]'`` (lm-eval).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.errors import LayergraftError
from layergraft.utils import write_bytes_atomic

TASK_SALT = "layergraft-lm-sentiment-v1"
CHOICES = ("negative", "positive")
TEMPLATE = "Review: {{text}}\nSentiment:"


def sentiment_examples(corpus: str = "movies", per_class: int = 200) -> list[dict]:
    """Balanced held-out snippets of one corpus as {"id", "text", "label"} (1 = positive)."""
    from layergraft.data import movies

    if corpus not in movies.CORPORA:
        raise LayergraftError(f"no sentiment corpus '{corpus}': use one of "
                              f"{', '.join(movies.CORPORA)}")
    test = movies.load_corpus(corpus)["test"]
    rows = sorted(((row_id, rating, text) for row_id, rating, text
                   in zip(test["id"], test["rating"], test["text"], strict=True) if rating),
                  key=lambda row: hashlib.sha256(f"{TASK_SALT}:{row[0]}".encode()).digest())
    picked = [row for label in (1, 0) for row in
              [r for r in rows if (r[1] > 0) == bool(label)][:per_class]]
    return [{"id": row_id, "text": text, "label": int(rating > 0)}
            for row_id, rating, text in sorted(picked)]


def write_sentiment_task(folder: str | os.PathLike, *, corpus: str = "movies",
                         per_class: int = 200) -> str:
    """Write the task's JSONL and YAML into `folder`; returns the task name for lm-eval."""
    folder = Path(folder).resolve()
    name = f"layergraft_{corpus}_sentiment"
    examples = sentiment_examples(corpus, per_class)
    data = folder / f"{name}.jsonl"
    write_bytes_atomic(data, "".join(json.dumps(e) + "\n" for e in examples).encode())
    config = {
        "task": name, "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
        "output_type": "multiple_choice", "doc_to_text": TEMPLATE,
        "doc_to_choice": list(CHOICES), "doc_to_target": "label",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                        for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0, "source": f"hutto_ICWSM_2014 {corpus} test split"},
    }
    # JSON is YAML, and it quotes the template's newline and braces safely
    write_bytes_atomic(folder / f"{name}.yaml", json.dumps(config, indent=1).encode())
    return name


def harness_scores(models: Mapping[str, PreTrainedModel], tokenizer: PreTrainedTokenizerBase,
                   *, corpus: str = "movies", per_class: int = 200, batch_size: int = 8,
                   folder: str | os.PathLike | None = None) -> dict[str, dict]:
    """Zero-shot accuracy of each model on the local sentiment task: {name: record}.
    The task files go to `folder` when given (kept), else to a temporary one."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="layergraft-lm-eval-") as tmp:
            return harness_scores(models, tokenizer, corpus=corpus, per_class=per_class,
                                  batch_size=batch_size, folder=tmp)
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LayergraftError("the lm-eval score needs lm-evaluation-harness: "
                              "pip install 'layergraft[lm]'") from None
    task = write_sentiment_task(folder, corpus=corpus, per_class=per_class)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    records = {}
    for name, model in models.items():
        wrapped = HFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(model=wrapped, tasks=[task], task_manager=manager,
                                      num_fewshot=0, log_samples=False)
        result = out["results"][task]
        records[name] = {"task": task, "examples": int(out["n-samples"][task]["effective"]),
                         "num_fewshot": 0, "chance": 0.5, "lm_eval": lm_eval.__version__,
                         **{metric: float(result[f"{metric},none"])
                            for metric in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")}}
    return records
