"""LM text: reading files and folders, the split by document, the built-in corpora, the token
stream with EOS between documents, and the non-overlapping blocks and windows."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_lm import tiny_char_tokenizer

from layergraft.data import lm_text, movies
from layergraft.data.lm_text import (
    blocks,
    blocks_dataset,
    eval_windows,
    hash_split,
    load_texts,
    read_documents,
    token_stream,
    window_size,
)
from layergraft.errors import LayergraftError


def test_plain_text_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first line\nstill the first\n\n  \nsecond\r\n\r\nthird\n")
    assert read_documents(path) == ["first line\nstill the first", "second", "third"]


def test_jsonl_documents_are_its_text_fields_and_bad_lines_are_one_line_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": " two "}) + "\n")
    assert read_documents(path) == ["one", "two"]
    path.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(LayergraftError, match=r"a.jsonl:2 has no string 'text' field"):
        read_documents(path)
    path.write_text("{not json\n")
    with pytest.raises(LayergraftError, match=r"a.jsonl:1 is not JSON"):
        read_documents(path)


def test_a_folder_is_one_document_per_text_file_and_its_jsonl_rows(tmp_path):
    (tmp_path / "b.txt").write_text("para one\n\npara two of the same file\n")
    (tmp_path / "a.md").write_text("doc a")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "row"}) + "\n")
    (tmp_path / ".hidden").write_text("never")
    assert read_documents(tmp_path) == ["doc a", "para one\n\npara two of the same file", "row"]


def test_unreadable_or_empty_text_is_a_one_line_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(LayergraftError, match="holds no text"):
        read_documents(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LayergraftError, match="is not UTF-8 text"):
        read_documents(tmp_path / "bin.txt")
    with pytest.raises(LayergraftError, match="no text at"):
        load_texts(tmp_path / "missing")


def test_the_split_is_by_document_content_fixed_and_disjoint():
    documents = [f"document number {i}" for i in range(2000)] + ["repeated"] * 5
    splits = hash_split(documents)
    shuffled = hash_split(list(reversed(documents)))
    assert all(sorted(splits[s]) == sorted(shuffled[s]) for s in splits)
    assert sum(map(len, splits.values())) == len(documents)
    assert [s for s in splits if "repeated" in splits[s]] in (["train"], ["dev"], ["test"])
    assert set(splits["train"]).isdisjoint(splits["test"])
    assert 0.75 < len(splits["train"]) / len(documents) < 0.85
    assert 0.07 < len(splits["test"]) / len(documents) < 0.13


def test_movie_text_keeps_the_sentiment_split_and_editorials_are_held_out_only():
    movie = load_texts("movie-text")
    assert {s: len(d) for s, d in movie.splits.items()} == {"train": 8498, "dev": 1043,
                                                            "test": 1064}
    test_ids = set(movies.load_corpus("movies")["test"]["text"])
    assert set(movie.documents("test")) == test_ids
    editorials = load_texts("editorials-text")
    assert list(editorials.splits) == ["test"] and len(editorials.documents("test")) == 5190
    with pytest.raises(LayergraftError, match="has no train documents"):
        editorials.documents("train")
    assert movie.describe()["test"] == {"documents": 1064, "characters": 120087}


def test_the_stream_puts_eos_after_each_document_and_no_other_special_token():
    tokenizer = tiny_char_tokenizer()
    stream = token_stream(tokenizer, ["ab", "c"])
    a, b, c = (tokenizer.convert_tokens_to_ids(ch) for ch in "abc")
    assert stream.tolist() == [a, b, tokenizer.eos_token_id, c, tokenizer.eos_token_id]
    assert stream.dtype == torch.long and len(token_stream(tokenizer, [])) == 0


def test_blocks_do_not_overlap_cover_the_stream_in_order_and_drop_the_tail():
    stream = torch.arange(23)
    rows = blocks(stream, 5)
    assert rows.shape == (4, 5) and torch.equal(rows.flatten(), stream[:20])
    assert len(set(rows.flatten().tolist())) == 20
    assert blocks(stream, 5, max_blocks=2).shape == (2, 5)
    with pytest.raises(LayergraftError, match="23 tokens, too short for one window of 64"):
        blocks(stream, 64)


def test_the_window_is_1024_when_the_text_allows_else_the_largest_power_of_two_that_fits():
    assert window_size(5000) == 1024
    assert window_size(5000, max_positions=300) == 256
    assert window_size(700) == 512
    assert eval_windows(torch.arange(3000)).shape == (2, 1024)
    assert eval_windows(torch.arange(100), 32).shape == (3, 32)
    with pytest.raises(LayergraftError, match="longer than the model takes"):
        eval_windows(torch.arange(3000), 128, max_positions=64)
    with pytest.raises(LayergraftError, match="too short for one window"):
        eval_windows(torch.arange(1))
    assert lm_text.DEFAULT_WINDOW == 1024


def test_blocks_become_a_dataset_keyed_by_row_for_the_teacher_cache():
    rows = blocks(torch.arange(30), 10)
    data = blocks_dataset(rows)
    assert data["example_id"] == [0, 1, 2] and data["input_ids"][1] == list(range(10, 20))
    assert all(sum(mask) == 10 for mask in data["attention_mask"])
