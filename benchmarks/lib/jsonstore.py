"""Row files (offline.json, ablations.json) that several benchmark processes update at once:
each change re-reads the file under an exclusive lock and replaces it atomically. Work items
are claimed the same way, so that processes sharing a plan never run one item twice."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from layergraft.utils import write_json_atomic


def read_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def update_rows(path: Path, update: Callable[[list[dict]], list[dict]]) -> None:
    """Write `update(current rows)`, with no other process's change lost in between."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_rows(path)
        new = update(rows)
        if new != rows:
            write_json_atomic(path, new)


@contextmanager
def claim(path: Path, wait: bool = False) -> Iterator[bool]:
    """Hold `path`'s lock for the block: True when this process holds it, False when another
    process does (only without `wait`). The operating system frees it if a process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
