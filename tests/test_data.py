"""Tokenised splits keep their row ids; dynamic padding and loaders keep them as tensors."""

from __future__ import annotations

import pytest
import torch
from tiny_task import one_thread, save_tiny_teacher, write_tiny_task
from transformers import AutoTokenizer

from layergraft.data.encoding import by_length, collator, encode, loader
from layergraft.data.tasks import load_task

assert one_thread  # an autouse fixture


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(save_tiny_teacher(tmp_path_factory.mktemp("base")))


def make_toy_task(tmp_path, n_train: int, n_dev: int, pairs: bool = False):
    """The tiny CSV task; with ``pairs``, each row's words reversed become its text pair."""
    task = load_task(write_tiny_task(tmp_path / "task", sizes=(n_train, n_dev, 2)))
    if pairs:
        for name, data in task.splits.items():
            reversed_words = [" ".join(t.split()[::-1]) for t in data["text"]]
            task.splits[name] = data.add_column("text_pair", reversed_words)
    return task


def test_encode_keeps_row_ids_labels_and_no_padding(tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=20, n_dev=10)
    encoded = encode(task, tokenizer)
    assert list(encoded) == ["train", "dev", "test"]
    train = encoded["train"]
    assert set(train.column_names) == {
        "input_ids", "token_type_ids", "attention_mask", "labels", "example_id"}
    assert list(train["example_id"]) == list(range(20))
    assert list(train["labels"]) == list(task.splits["train"]["label"])
    for row, text in zip(train, task.splits["train"]["text"], strict=True):
        assert tokenizer.decode(row["input_ids"], skip_special_tokens=True) == text
        assert all(row["attention_mask"])  # unpadded: every position is a real token
    assert len({len(ids) for ids in train["input_ids"]}) > 1


def test_pairs_get_segment_ids_and_truncation_respects_max_length(tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=8, n_dev=4, pairs=True)
    row = encode(task, tokenizer, splits=["dev"])["dev"][0]
    first = tokenizer(task.splits["dev"][0]["text"])["input_ids"]
    assert row["token_type_ids"] == [0] * len(first) + [1] * (len(row["input_ids"]) - len(first))
    assert row["input_ids"][len(first) - 1] == tokenizer.sep_token_id
    short = encode(task, tokenizer, max_length=8)
    assert max(len(ids) for ids in short["train"]["input_ids"]) == 8


def test_unlabeled_splits_have_no_labels_and_unknown_splits_fail(tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=4, n_dev=4)
    task.splits["test"] = task.splits["test"].remove_columns("label")
    assert "labels" not in encode(task, tokenizer, splits=["test"])["test"].column_names
    with pytest.raises(KeyError, match="no split"):
        encode(task, tokenizer, splits=["validation"])


def test_collator_pads_to_the_longest_row_and_carries_example_ids(tokenizer, tmp_path):
    data = encode(make_toy_task(tmp_path, n_train=6, n_dev=2), tokenizer)["train"]
    rows = [data[i] for i in range(6)]
    batch = collator(tokenizer)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (6, longest)
    assert batch["example_id"].tolist() == list(range(6))
    assert batch["example_id"].dtype == torch.int64 and batch["labels"].dtype == torch.int64
    for i, row in enumerate(rows):
        assert batch["attention_mask"][i].sum() == len(row["input_ids"])
        assert batch["input_ids"][i, len(row["input_ids"]):].eq(tokenizer.pad_token_id).all()


def test_loader_shuffles_by_seed_and_visits_every_row_once(tokenizer, tmp_path):
    data = encode(make_toy_task(tmp_path, n_train=30, n_dev=2), tokenizer)["train"]

    def order(**kwargs) -> list[int]:
        return torch.cat([b["example_id"] for b in loader(data, tokenizer, 8, **kwargs)]).tolist()

    assert order() == list(range(30))
    shuffled = order(shuffle=True, seed=3)
    assert sorted(shuffled) == list(range(30)) and shuffled != list(range(30))
    assert order(shuffle=True, seed=3) == shuffled
    assert order(shuffle=True, seed=4) != shuffled


def test_by_length_orders_rows_shortest_first_and_keeps_their_ids(tokenizer, tmp_path):
    data = encode(make_toy_task(tmp_path, n_train=30, n_dev=2), tokenizer)["train"]
    ordered = by_length(data)
    lengths = [len(ids) for ids in ordered["input_ids"]]
    assert lengths == sorted(lengths) and len(set(lengths)) > 1
    assert sorted(ordered["example_id"]) == list(range(30))
    for row in ordered.select(range(5)):
        assert row["input_ids"] == data[row["example_id"]]["input_ids"]
