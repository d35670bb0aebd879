"""Text for language modelling: documents, split by document, as one token stream in blocks.

**Your text** (``--texts FILE|DIR``): a ``.jsonl`` file holds one JSON object a line with a
``text`` field, one document each; any other file is plain UTF-8 text whose documents are
separated by blank lines; a folder is its files (top level, names in order, hidden ones
skipped), each plain text file one whole document and each JSONL file its rows. Documents are
split into train / dev / test by a salted hash of their content (see :func:`hash_split`), so
a document repeated in the text can never sit on both sides of a split.

**Built-in corpora** (offline: the Hutto & Gilbert ICWSM 2014 files that
:mod:`layergraft.data.movies` fetches once through pip with the vaderSentiment sdist; each
snippet is one document). Sizes in SmolLM2 tokens, one EOS per document included:

- ``movie-text``: Rotten Tomatoes review sentences, in-domain. train 8,498 documents,
  215,864 tokens (945,292 characters); dev 1,043, 26,866 (117,336); test 1,064, 27,359
  (120,087).
- ``editorials-text``: NYT editorial snippets, test only: 5,190 documents, 123,977 tokens
  (540,963 characters).
- ``tweets-text``: tweets, test only: 4,200 documents, 93,995 tokens (334,148 characters).
- ``products-text``: Amazon product-review snippets, test only: 3,708 documents, 80,875
  tokens (324,997 characters).

``movie-text`` is split by :func:`layergraft.data.movies.split_of` (salted SHA-256 of the
snippet id), the split of the sentiment tasks, so a student trained on its ``train`` never saw
a sentence of the sentiment ``test`` either. The other three are out-of-domain held-out text:
``test`` only, never trained on. A held-out split of movie-text fills 26 windows of 1,024
tokens; editorials-text 121.

**Stream and blocks.** :func:`token_stream` tokenises each document without special tokens
and puts the tokenizer's EOS after each one, so a block that spans two documents shows the
model where one ends (the packing of GPT-style pretraining). :func:`blocks` cuts a stream into
non-overlapping rows of one length and drops the rest: the same cut gives training blocks and
evaluation windows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from layergraft.errors import LayergraftError

BUILTIN_TEXTS = {"movie-text": "movies", "editorials-text": "editorials",
                 "tweets-text": "tweets", "products-text": "products"}
SPLIT_SALT = "layergraft-lm-text-v1"
SPLIT_NAMES = ("train", "dev", "test")
JSONL = (".jsonl", ".json")
DEFAULT_WINDOW = 1024


@dataclass(frozen=True)
class LMText:
    """Documents by split, and where they came from (a built-in name or a path)."""

    name: str
    splits: dict[str, list[str]]

    def documents(self, split: str) -> list[str]:
        """The documents of one split; a one-line error for a split the text lacks."""
        if not self.splits.get(split):
            have = ", ".join(s for s, docs in self.splits.items() if docs) or "none"
            raise LayergraftError(f"text '{self.name}' has no {split} documents (it has {have})")
        return self.splits[split]

    def describe(self) -> dict:
        """Documents and characters per split, for a record."""
        return {"text": self.name, **{split: {"documents": len(docs),
                                              "characters": sum(map(len, docs))}
                                      for split, docs in self.splits.items()}}


def load_texts(source: str | os.PathLike) -> LMText:
    """A built-in corpus by name (see module doc) or the user's FILE|DIR, split by document."""
    if str(source) in BUILTIN_TEXTS:
        return builtin_text(str(source))
    path = Path(source)
    if not path.exists():
        raise LayergraftError(f"no text at '{source}': give a file, a folder, or one of "
                              f"{', '.join(BUILTIN_TEXTS)}")
    return LMText(str(path), hash_split(read_documents(path)))


def builtin_text(name: str) -> LMText:
    """One of the offline corpora; movie-text keeps the sentiment tasks' split."""
    from layergraft.data import movies

    corpus = BUILTIN_TEXTS[name]
    rows = movies.parse(movies.decode((movies.fetch() / movies.CORPORA[corpus].filename)
                                      .read_bytes()))
    split = movies.CORPORA[corpus].hashed_split
    splits: dict[str, list[str]] = {s: [] for s in (SPLIT_NAMES if split else ("test",))}
    for row_id, _, text in rows:
        splits[movies.split_of(row_id) if split else "test"].append(text)
    return LMText(name, splits)


def read_documents(path: str | os.PathLike) -> list[str]:
    """The non-empty documents of a file or folder, in order (rules in the module doc)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        documents = [doc for f in files for doc in (_jsonl_documents(f) if _is_jsonl(f)
                                                    else [_read(f).strip()]) if doc]
    elif _is_jsonl(path):
        documents = _jsonl_documents(path)
    else:
        parts = re.split(r"\n[ \t]*\n", _read(path).replace("\r\n", "\n"))
        documents = [part.strip() for part in parts if part.strip()]
    if not documents:
        raise LayergraftError(f"'{path}' holds no text: give plain text (documents separated "
                              "by blank lines) or JSONL with a 'text' field")
    return documents


def hash_split(documents: Sequence[str], salt: str = SPLIT_SALT) -> dict[str, list[str]]:
    """train / dev / test = 80 / 10 / 10 by ``int(sha256(f"{salt}:{text}"), first 8 bytes) %
    100`` in 0-79 / 80-89 / 90-99: fixed by the content alone, on every run and machine."""
    splits: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for doc in documents:
        bucket = int.from_bytes(hashlib.sha256(f"{salt}:{doc}".encode()).digest()[:8], "big")
        splits[SPLIT_NAMES[(bucket % 100 >= 80) + (bucket % 100 >= 90)]].append(doc)
    return splits


def token_stream(tokenizer: PreTrainedTokenizerBase, documents: Sequence[str]) -> torch.Tensor:
    """All documents' tokens in order, EOS after each one (when the tokenizer has an EOS),
    as one int64 vector."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = tokenizer(list(documents), add_special_tokens=False)["input_ids"] if documents else []
    return torch.tensor([token for doc in ids for token in [*doc, *eos]], dtype=torch.long)


def blocks(stream: torch.Tensor, length: int, max_blocks: int | None = None) -> torch.Tensor:
    """Non-overlapping rows [n, length] of a stream, the leftover tail dropped."""
    if length < 2:
        raise LayergraftError(f"a window needs at least 2 tokens (one to predict), not {length}")
    count = len(stream) // length
    if max_blocks is not None:
        count = min(count, max_blocks)
    if count < 1:
        raise LayergraftError(f"the text has {len(stream)} tokens, too short for one window "
                              f"of {length}: give more text or a smaller window")
    return stream[:count * length].view(count, length)


def window_size(n_tokens: int, preferred: int = DEFAULT_WINDOW,
                max_positions: int | None = None) -> int:
    """`preferred` when the text and the model allow it, else the largest power of two that
    fits both (so one text gets one window size on every run, stated in every record)."""
    fits = min(n_tokens, max_positions or n_tokens)
    if fits >= preferred:
        return preferred
    if fits < 2:
        raise LayergraftError(f"the text has {n_tokens} tokens, too short for one window of "
                              "at least 2 tokens: give more text")
    return 1 << (fits.bit_length() - 1)


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in JSONL


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LayergraftError(f"'{path}' is not UTF-8 text: give UTF-8 plain text or "
                              "JSONL") from None


def _jsonl_documents(path: Path) -> list[str]:
    documents = []
    for number, line in enumerate(_read(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise LayergraftError(f"{path}:{number} is not JSON: give one object a line, "
                                  'such as {"text": ...}') from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise LayergraftError(f"{path}:{number} has no string 'text' field")
        if row["text"].strip():
            documents.append(row["text"].strip())
    return documents


def eval_windows(stream: torch.Tensor, window: int | None = None, *,
                 max_positions: int | None = None, max_windows: int | None = None
                 ) -> torch.Tensor:
    """Non-overlapping evaluation windows [n, window] of a held-out stream: `window` as given
    (a one-line error when the text is shorter), or by default `window_size` of it."""
    if window is None:
        window = window_size(len(stream), DEFAULT_WINDOW, max_positions)
    elif max_positions is not None and window > max_positions:
        raise LayergraftError(f"a window of {window} tokens is longer than the model takes "
                              f"({max_positions} positions)")
    return blocks(stream, window, max_windows)


def blocks_dataset(rows: torch.Tensor) -> datasets.Dataset:
    """Training blocks [n, length] as a `datasets.Dataset` the Trainer reads: `input_ids`,
    an all-ones `attention_mask`, and `example_id` (the row, the LM teacher cache's key)."""
    return datasets.Dataset.from_dict({"input_ids": rows.tolist(),
                                       "attention_mask": torch.ones_like(rows).tolist(),
                                       "example_id": list(range(len(rows)))})
