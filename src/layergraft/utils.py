"""Small helpers every layer shares: atomic file writes, the versions a record carries,
parameter counts, a model's fingerprint and the cache folder.

Atomic writes: a crash leaves the old file or the new one, never half of either. Everything
layergraft saves (JSON records, safetensors, arrays, plots, reports, data files) goes through
`atomic_write`. The temp file is named by us (not `tempfile`), so it gets the usual
permissions from the umask rather than the 0600 of a private temp file, and it is removed
whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
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


def versions() -> dict[str, str]:
    """The versions of layergraft and the libraries behind a record, for its provenance."""
    import datasets
    import torch
    import transformers

    import layergraft

    return {"layergraft": layergraft.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__, "datasets": datasets.__version__,
            "python": platform.python_version()}


def num_parameters(module) -> int:
    """Parameters of a model or module (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


def model_fingerprint(model) -> str:
    """Hash of the config (minus its path and version) and every weight, bit for bit."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` when given, else layergraft's cache folder: ``$LAYERGRAFT_CACHE`` or the
    platform's user cache folder (never the repository). Downloaded data, teacher outputs
    and teacher analyses all live below it."""
    if cache_dir:
        return Path(cache_dir)
    override = os.environ.get("LAYERGRAFT_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "layergraft"
