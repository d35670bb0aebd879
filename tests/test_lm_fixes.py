"""The `lm` objective's speed record agrees with itself, token budgets are shared in tokens
by compare and the auto probes, and `evaluate --objective lm` prints perplexities."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from tiny_lm_run import save_tiny_lm, write_tiny_text
from tiny_task import one_thread  # noqa: F401

from layergraft.deploy.lm_speed import PHASES, phase_speed
from layergraft.errors import LayergraftError
from layergraft.pipeline.compare import RunKey
from layergraft.training.budget import Budget
from layergraft.training.train import TrainConfig

TRAINING = TrainConfig(output_dir="", learning_rate=1e-3, batch_size=4, max_length=16,
                       progress=False)
# repeat seconds of the SmolLM2 30->22 prefill whose per-model medians disagreed with the
# ratio (load fell after two repeats): teacher 287.5 tokens/s, student 218.9, ratio 1.497
SMOLLM_PREFILL = ([1.98870, 1.94745, 0.89042, 0.86180, 0.75601],
                  [1.16974, 1.30115, 2.03602, 0.55672, 0.61798])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmfix")
    return save_tiny_lm(folder / "teacher"), write_tiny_text(folder / "text.txt")


def _consistent(phase: dict) -> None:
    tokens = phase["tokens_per_second"]
    assert phase["ratio"] == pytest.approx(tokens["student"] / tokens["teacher"], rel=1e-9)
    assert (phase["ratio"] > 1) == (tokens["student"] > tokens["teacher"])


def test_the_recorded_smollm_prefill_now_agrees_with_its_ratio():
    phase = phase_speed(*SMOLLM_PREFILL, tokens_per_repeat=256)
    _consistent(phase)
    assert phase["ratio"] == pytest.approx(1.4967, rel=1e-3) and phase["repeat"] == 1
    assert phase["tokens_per_second"]["student"] > phase["tokens_per_second"]["teacher"]
    with pytest.raises(LayergraftError, match="same"):
        phase_speed([1.0], [1.0, 2.0], tokens_per_repeat=1)


def test_half_depth_student_speed_record_is_self_consistent(tiny, one_thread):  # noqa: F811
    from transformers import AutoModelForCausalLM

    from layergraft.pipeline.lm_speed import lm_speed

    teacher = AutoModelForCausalLM.from_pretrained(tiny[0]).eval()
    student = copy.deepcopy(teacher)
    student.model.layers = torch.nn.ModuleList(list(student.model.layers)[:2])
    student.config.num_hidden_layers = 2
    record = lm_speed(teacher, student, prompt_tokens=16, new_tokens=4, repeats=5)
    assert record["ideal_ratio"] == 2.0
    for phase in PHASES:
        by = {row["model"]: row for row in record["rows"] if row["backend"] == phase}
        ratios = [t / s for t, s in zip(by["teacher"]["repeat_seconds"],
                                        by["student"]["repeat_seconds"], strict=True)]
        _consistent({"ratio": record[f"{phase}_ratio"],
                     "tokens_per_second": record[f"{phase}_tokens_per_second"]})
        assert record[f"{phase}_ratio"] == pytest.approx(sorted(ratios)[2])
        repeat = record[f"{phase}_median_repeat"]
        per_repeat = (16 if phase == "prefill" else 4) * by["teacher"]["examples_per_repeat"]
        assert record[f"{phase}_tokens_per_second"]["teacher"] == pytest.approx(
            per_repeat / by["teacher"]["repeat_seconds"][repeat])


def test_one_budget_parser_knows_tokens_and_shares_keep_the_unit():
    assert Budget.parse("2000000 tokens") == Budget(2000000, "tokens")
    assert str(Budget.parse("2000000 tokens")) == "2000000 tokens"  # not 2e+06
    assert RunKey("graft", "distill", 2, budget=0.5).scaled(Budget.parse("301 tokens")) == \
        Budget(151, "tokens")
    assert Budget.parse("1024 tokens").share(0.125) == Budget(128, "tokens")
    assert Budget.parse("0.5 epochs").share(0.5) == Budget(0.25, "epochs")
    assert Budget.parse("300 tokens").steps(0, 1, tokens_per_step=64) == 5
    with pytest.raises(LayergraftError, match="does not apply"):
        Budget.parse("300 tokens", ("epochs", "steps"))


def _options(tmp_path, texts) -> dict:
    return {"objective": "lm", "texts": texts, "ood": False, "eval_windows": 1,
            "calibration_windows": 4, "training": TRAINING, "device": "cpu",
            "precision": "fp32", "cache_dir": tmp_path / "cache", "progress": False,
            "speed": False}


def test_compare_and_probes_take_a_token_budget(tiny, tmp_path, one_thread):  # noqa: F811
    from layergraft import api

    teacher, texts = tiny
    options = _options(tmp_path, texts)
    rows = api.compare(teacher, None, out=tmp_path / "grid", layers=[2], methods=[],
                       strategies=[], graft_strategies=["distill"], budget="128 tokens",
                       **options)
    assert [row["run"] for row in rows] == ["teacher", "L2-graft-distill-s0"]
    record = json.loads((tmp_path / "grid" / "runs" / "L2-graft-distill-s0"
                         / "results.json").read_text())
    assert record["settings"]["training"]["steps"] == 2  # 128 tokens: 2 batches of 4 x 16
    record = api.compress(teacher, None, layers=2, out=tmp_path / "auto",
                          budget="1024 tokens", learning_rate="auto", **options)
    assert record["choices"]["learning_rate"]["budget"] == "128 tokens"
    assert record["settings"]["training"]["steps"] == 16


def test_the_cli_evaluates_a_decoder_by_perplexity(tiny, one_thread):  # noqa: F811
    from typer.testing import CliRunner

    from layergraft.cli import app

    teacher, texts = tiny
    base = ["evaluate", teacher, "--objective", "lm", "--texts", texts, "--device", "cpu",
            "--precision", "fp32"]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    # (the loading progress bar shares the captured output, without a newline)
    lines = re.findall(r"\b(?:dev|test) \(.*", result.output)
    assert [line.split()[0] for line in lines] == ["dev", "test"]
    for line in lines:
        assert re.search(r"perplexity \d+\.\d+ on \d+ windows of \d+ tokens", line), line
    result = CliRunner().invoke(app, [*base, "--teacher", teacher, "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output and "agreement 100.0%" in result.output
