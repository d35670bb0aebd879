"""From a task's text to model inputs: tokenised splits, dynamic padding, data loaders.

Splits are tokenised without padding (each batch is padded to its own longest row, which on
short sentences is several times faster than padding to ``max_length``). Every row carries an
``example_id``, its index within its split, so per-example results and cached teacher outputs
can be matched to rows whatever order batches come in.

Every tokenisation truncates to `token_limit`: the length asked for, but never more than the
model takes (`usable_positions`, set on the tokenizer by `fit_tokenizer` when a model loads),
so a model with a short position table never meets an index past its end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PretrainedConfig, PreTrainedTokenizerBase

from layergraft.data.tasks import LABEL, PAIR, TEXT, Task

EXAMPLE_ID = "example_id"
LABELS = "labels"
DEFAULT_MAX_LENGTH = 128
# Families whose position ids start at padding_idx + 1 (RoBERTa's scheme), so the first
# padding_idx + 1 rows of the table are no token's: padding_idx is the config's pad_token_id
# (None here), or MPNet's fixed 1. BERT, ELECTRA, DistilBERT and DeBERTa count from 0.
_POSITIONS_AFTER_PADDING: dict[str, int | None] = {"roberta": None, "xlm-roberta": None,
                                                    "mpnet": 1}


def usable_positions(config: PretrainedConfig) -> int | None:
    """How many tokens, special ones included, a model of `config` takes: its position table
    less the rows a RoBERTa-like family skips; None when the config sets no table size."""
    table = getattr(config, "max_position_embeddings", None)
    if table is None:
        return None
    model_type = getattr(config, "model_type", None)
    if model_type not in _POSITIONS_AFTER_PADDING:
        return int(table)
    padding = _POSITIONS_AFTER_PADDING[model_type]
    if padding is None:
        padding = config.pad_token_id if config.pad_token_id is not None else 1
    return int(table) - padding - 1


def fit_tokenizer(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig
                  ) -> PreTrainedTokenizerBase:
    """The tokenizer, its `model_max_length` lowered to the model's usable positions: a
    tokenizer knows nothing of its model's table, and `token_limit` asks it."""
    limit = usable_positions(config)
    if limit is not None and tokenizer.model_max_length > limit:
        tokenizer.model_max_length = limit
    return tokenizer


def token_limit(tokenizer: PreTrainedTokenizerBase, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    """The length every tokenisation truncates to: `max_length`, but at most what the
    tokenizer (fitted to its model by `fit_tokenizer`) takes."""
    return max(1, min(int(max_length), int(tokenizer.model_max_length)))


def encode(
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = DEFAULT_MAX_LENGTH,
    splits: Iterable[str] | None = None,
) -> datasets.DatasetDict:
    """Tokenise ``splits`` (default: all) of ``task``, truncating to ``max_length`` tokens
    (at most the model's: `token_limit`).

    Columns: ``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer makes
    them (pairs get segment ids), ``labels`` when the split is labeled, and ``example_id``.
    """
    names = list(task.splits) if splits is None else list(splits)
    missing = [s for s in names if s not in task.splits]
    if missing:
        raise KeyError(f"task {task.spec.name} has no split {missing} (has {list(task.splits)})")
    max_length = token_limit(tokenizer, max_length)

    def tokenize(batch: dict[str, list]) -> dict[str, Any]:
        pair = (batch[PAIR],) if PAIR in batch else ()
        return tokenizer(batch[TEXT], *pair, truncation=True, max_length=max_length)

    encoded = {}
    for name in names:
        data = task.splits[name]
        texts = [c for c in (TEXT, PAIR) if c in data.column_names]
        data = data.map(tokenize, batched=True, remove_columns=texts,
                        desc=f"tokenising {task.spec.name}/{name}")
        if LABEL in data.column_names:
            data = data.rename_column(LABEL, LABELS)
        encoded[name] = data.add_column(EXAMPLE_ID, list(range(len(data))))
    return datasets.DatasetDict(encoded)


def collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its longest row; ``labels`` and ``example_id`` become tensors too."""
    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


def loader(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over an encoded split; ``shuffle`` order is fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collator(tokenizer))


def by_length(dataset: datasets.Dataset) -> datasets.Dataset:
    """The rows shortest first, so that batches of inference pad almost nothing (random order
    pads movie sentences to about twice their tokens). Rows keep their ``example_id``."""
    lengths = np.fromiter((len(ids) for ids in dataset["input_ids"]), dtype=np.int64)
    return dataset.select(np.argsort(lengths, kind="stable"))
