"""A model whose classification head was never trained (a base encoder, `minilm` from its
wheel) needs `layergraft finetune` first: every command that scores or grafts it for a task
refuses it in one line, and goes on only with --untrained-head (allow_untrained_head=True),
then with one warning line instead of transformers' load report."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from tiny_task import save_tiny_teacher, write_tiny_task
from transformers import AutoConfig

import layergraft
from layergraft.cli import main
from layergraft.errors import LayergraftError

QUICK = {"speed": False, "progress": False, "ood": False}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny encoder saved without a classification head, and a task."""
    root = tmp_path_factory.mktemp("untrained")
    model = save_tiny_teacher(root / "base", head=False)
    assert AutoConfig.from_pretrained(model).architectures == ["BertModel"]
    return model, write_tiny_task(root / "task")


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """The warning is said once per model and process; each test is a new command."""
    from layergraft import models

    monkeypatch.setattr(models, "_warned_untrained", set())


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log():
    """What transformers logs (its load report among it); it does not propagate to root."""
    handler = Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["layergraft", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def commands(model: str, task: str, out: str) -> dict[str, list[str]]:
    return {
        "graft": ["graft", model, "--layers", "2", "--method", "drop-alternate", "--out", out],
        "evaluate": ["evaluate", model, "--task", task, "--split", "dev"],
        "analyze": ["analyze", model, "--task", task, "--samples", "16", "--out", out],
        "analyze-kl": ["analyze", model, "--task", task, "--samples", "16", "--loss", "kl",
                       "--out", out],
        "compress": ["compress", model, "--task", task, "--layers", "2", "--method", "drop-top",
                     "--strategy", "none", "--out", out],
        "compare": ["compare", model, "--task", task, "--layers", "2", "--methods", "drop-top",
                    "--strategies", "none", "--graft-strategies", "", "--out", out],
    }


@pytest.mark.parametrize("command", ["graft", "evaluate", "analyze", "analyze-kl", "compress",
                                     "compare"])
def test_every_task_command_refuses_an_untrained_head_in_one_line(base, tmp_path, monkeypatch,
                                                                  capsys, transformers_log,
                                                                  command):
    model, task = base
    code, err = run_cli(monkeypatch, capsys, *commands(model, task, str(tmp_path / "out"))[command])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert "layergraft finetune" in errors[0] and "--untrained-head" in errors[0]
    assert "Traceback" not in err and not any("LOAD REPORT" in m for m in transformers_log)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["graft", "evaluate", "analyze"])
def test_untrained_head_flag_goes_on_with_one_warning_and_no_load_report(
        base, tmp_path, monkeypatch, capsys, caplog, transformers_log, command):
    model, task = base
    args = commands(model, task, str(tmp_path / "out"))[command]
    with caplog.at_level(logging.WARNING, logger="layergraft"):
        code, err = run_cli(monkeypatch, capsys, *args, "--untrained-head")
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("layergraft")]
    assert len(warnings) == 1 and "layergraft finetune" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert not any("LOAD REPORT" in m for m in transformers_log), transformers_log


def test_compare_says_it_once_for_all_its_runs(base, tmp_path, caplog, transformers_log):
    model, task = base
    with caplog.at_level(logging.WARNING, logger="layergraft"):
        rows = layergraft.compare(model, task, out=tmp_path / "cmp", layers=[2],
                                  methods=["drop-top", "drop-bottom"], strategies=["none"],
                                  graft_strategies=[], allow_untrained_head=True, **QUICK)
    assert {row["method"] for row in rows} == {"drop-top", "drop-bottom"}
    warnings = [r.getMessage() for r in caplog.records if "layergraft finetune" in r.getMessage()]
    assert len(warnings) == 1
    assert not any("LOAD REPORT" in m for m in transformers_log)


def test_python_functions_refuse_unless_allowed(base, tmp_path):
    model, task = base
    calls = {
        "graft": lambda **kw: layergraft.graft(model, layers=2, method="drop-top",
                                               out=tmp_path / "g", **kw),
        "analyze": lambda **kw: layergraft.analyze(model, task, out=tmp_path / "a",
                                                   samples=16, progress=False, **kw),
        "evaluate": lambda **kw: layergraft.evaluate(model, task, splits=["dev"], **kw),
        "compress": lambda **kw: layergraft.compress(model, task, layers=2, method="drop-top",
                                                     strategy="none", out=tmp_path / "c",
                                                     **QUICK, **kw),
    }
    for name, call in calls.items():
        with pytest.raises(LayergraftError, match="layergraft finetune"):
            call()
        assert call(allow_untrained_head=True), name
    record = json.loads((tmp_path / "c" / "results.json").read_text())
    assert record["student"]["layers"] == 2


def test_a_dry_run_uses_no_head_and_refuses_no_encoder(base, tmp_path, caplog):
    """A suite checks a run's settings with the base model standing in for its teacher."""
    from layergraft.pipeline.compress import compress

    model, task = base
    with caplog.at_level(logging.WARNING, logger="layergraft"):
        plan = compress(model, task, layers=2, method="drop-top", strategy="none",
                        out_dir=tmp_path / "c", dry_run=True, **QUICK)
    assert plan["status"] == "to do" and plan["settings"]["layers"] == 2
    assert not (tmp_path / "c").exists() and not caplog.records
    with pytest.raises(LayergraftError, match="layergraft finetune"):
        compress(model, task, layers=2, method="drop-top", strategy="none",
                 out_dir=tmp_path / "c", **QUICK)


def test_an_untrained_head_is_the_same_for_every_command(base, tmp_path):
    """The new head is seeded, so an analysis of the base model fits a graft of it."""
    model, task = base
    layergraft.analyze(model, task, out=tmp_path / "a", samples=16, progress=False,
                       allow_untrained_head=True)
    layergraft.graft(model, layers=2, analysis=tmp_path / "a", out=tmp_path / "g",
                     allow_untrained_head=True)
    first = layergraft.evaluate(model, task, splits=["dev"], allow_untrained_head=True)
    again = layergraft.evaluate(model, task, splits=["dev"], allow_untrained_head=True)
    assert first[0]["metrics"] == again[0]["metrics"]


def test_finetune_trains_the_missing_head_and_its_result_needs_no_flag(base, tmp_path):
    model, task = base
    layergraft.finetune(model, task, out=tmp_path / "teacher", max_steps=2, batch_size=16,
                        progress=False, early_stopping_patience=None)
    assert layergraft.evaluate(str(tmp_path / "teacher"), task, splits=["dev"])
    layergraft.graft(str(tmp_path / "teacher"), layers=2, method="drop-top", out=tmp_path / "g")
