"""Atomic file writes: a crash leaves the old file or the new one, never half of either.

Everything layergraft saves (JSON records, safetensors, plots, reports, data files) goes
through here. The temp file is named by us (not `tempfile`), so it gets the usual
permissions from the umask rather than the 0600 of a private temp file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a temp file beside `path`, then move it into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def write_json_atomic(path: str | os.PathLike, data: object) -> Path:
    return write_bytes_atomic(path, json.dumps(data, indent=1).encode())
