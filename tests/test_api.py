"""The public API: every command is a lazily imported function of `layergraft`."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from tiny_task import save_tiny_teacher, write_tiny_task
from transformers import AutoModelForSequenceClassification

import layergraft
from layergraft.cli import main

COMMANDS = ["analyze", "graft", "finetune", "evaluate", "compress", "compare", "bench", "export",
            "load"]


def run_cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["layergraft", *args])
    try:
        main()
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_every_command_is_a_public_function_imported_on_first_use():
    code = ("import json, sys, layergraft; "
            "print(json.dumps([layergraft.__all__, 'torch' in sys.modules]))")
    names, heavy = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                             capture_output=True, text=True).stdout)
    assert names == COMMANDS and not heavy  # `import layergraft` loads no torch
    assert all(callable(getattr(layergraft, name)) for name in COMMANDS)
    assert set(COMMANDS) <= set(dir(layergraft))


def test_graft_from_python_is_the_graft_command(tmp_path, monkeypatch):
    teacher = save_tiny_teacher(tmp_path / "tiny")
    layergraft.graft(teacher, layers=2, method="drop-alternate", out=tmp_path / "api")
    assert run_cli(monkeypatch, "graft", teacher, "--layers", "2", "--method",
                   "drop-alternate", "--out", str(tmp_path / "cli")) == 0
    api, cli = (AutoModelForSequenceClassification.from_pretrained(tmp_path / name).state_dict()
                for name in ("api", "cli"))
    assert api.keys() == cli.keys() and all(torch.equal(api[k], cli[k]) for k in api)
    model, tokenizer = layergraft.load(str(tmp_path / "api"))
    assert model.config.num_hidden_layers == 2 and tokenizer("w1")["input_ids"]


def test_normalised_scores_at_graft_time_have_their_own_flag(tmp_path, monkeypatch, capsys):
    teacher = save_tiny_teacher(tmp_path / "tiny")
    task = str(write_tiny_task(tmp_path / "task"))
    layergraft.analyze(teacher, task, out=tmp_path / "raw", samples=16)
    layergraft.analyze(teacher, task, out=tmp_path / "normal", samples=16, normalize=True)
    stored = json.loads((tmp_path / "normal" / "analysis.json").read_text())["importance"]
    assert stored["normalize"] is True
    for flag in ("--normalize-scores", "--normalize"):
        code = run_cli(monkeypatch, "graft", teacher, "--layers", "2", "--analysis",
                       str(tmp_path / "raw"), flag, "--out", str(tmp_path / flag))
        assert code == (0 if flag == "--normalize-scores" else 2), capsys.readouterr().err
    manifest = json.loads((tmp_path / "--normalize-scores" / "graft_manifest.json").read_text())
    assert manifest["steps"][0]["options"]["normalize_scores"] is True


def test_a_depth_out_of_range_names_the_allowed_depths(tmp_path):
    import pytest

    from layergraft.errors import LayergraftError

    teacher = save_tiny_teacher(tmp_path / "tiny")
    for layers in (0, 4):
        with pytest.raises(LayergraftError, match="between 1 and 3 for this 4-layer model"):
            layergraft.graft(teacher, layers=layers, method="drop-top", out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
