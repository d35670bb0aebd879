"""The `lm` objective beyond the shared contract: healing lowers the span-end error, every
decoder baseline runs through compress, bad input is one line with nothing written, and the
CLI runs it."""

from __future__ import annotations

import json

import pytest
from tiny_lm_run import save_tiny_lm, write_tiny_text
from tiny_task import one_thread, save_tiny_teacher  # noqa: F401

from layergraft.errors import LayergraftError
from layergraft.pipeline.compress import compress
from layergraft.training.heal import HealConfig
from layergraft.training.train import TrainConfig

TRAINING = TrainConfig(output_dir="", learning_rate=1e-3, batch_size=4, max_length=16,
                       progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    return save_tiny_lm(folder / "teacher"), write_tiny_text(folder / "text.txt")


def _options(tmp_path, texts, **extra) -> dict:
    return {"objective": "lm", "texts": texts, "ood": False, "eval_windows": 1,
            "calibration_windows": 4, "training": TRAINING, "device": "cpu",
            "precision": "fp32", "cache_dir": tmp_path / "cache", "progress": False,
            "speed": False, "out_dir": tmp_path / "run", **extra}


def test_heal_strategy_lowers_the_span_end_mse_of_the_new_layers(tiny, tmp_path, one_thread):  # noqa: F811
    teacher, texts = tiny
    record = compress(teacher, None, layers=2, strategy="heal",
                      heal=HealConfig(steps=30, learning_rate=3e-3, batch_size=4),
                      **_options(tmp_path, texts))
    healed = record["heal"]
    assert healed["steps"] == 30 and healed["layers"] == [0, 1]
    assert sum(healed["mse_after"]) < 0.8 * sum(healed["mse_before"])
    assert record["training"] is None and record["test"]["window"] == 64


@pytest.mark.parametrize("method", ["shortgpt", "angular", "sleb", "drop-last", "laco",
                                    "streamline", "random", "drop-top", "drop-similar"])
def test_every_decoder_baseline_runs_through_compress(method, tiny, tmp_path, one_thread):  # noqa: F811
    teacher, texts = tiny
    record = compress(teacher, None, layers=2, method=method, strategy="none",
                      **_options(tmp_path, texts))
    assert record["layers"] == 2 and record["test"]["student_perplexity"] > 0
    assert record["continuations"] and (tmp_path / "run" / "README.md").is_file()


@pytest.mark.parametrize("method", ["sleb", "laco"])
def test_a_greedy_search_runs_once_and_is_replayed_for_other_strategies_and_seeds(
        method, tiny, tmp_path, one_thread, monkeypatch):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM

    from layergraft.scoring import block_scores

    teacher, texts = tiny
    measured = []
    real = block_scores.measure_blocks
    monkeypatch.setattr(block_scores, "measure_blocks",
                        lambda *args, **kw: measured.append(1) or real(*args, **kw))
    first = compress(teacher, None, layers=2, method=method, strategy="none",
                     **_options(tmp_path, texts))
    again = compress(teacher, None, layers=2, method=method, strategy="none", seed=1,
                     **_options(tmp_path, texts, out_dir=tmp_path / "again"))
    assert len(measured) == 1  # the second run searched nothing
    assert again["test"]["student_perplexity"] == first["test"]["student_perplexity"]
    one, two = (AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict()
                for name in ("run", "again"))
    assert all(torch.equal(one[k], two[k]) for k in one)
    other = compress(teacher, None, layers=3, method=method, strategy="none",
                     **_options(tmp_path, texts, out_dir=tmp_path / "three"))
    assert len(measured) == 2 and other["layers"] == 3  # another depth searches again


def _refused(tmp_path, teacher, message, task=None, **options):
    with pytest.raises(LayergraftError, match=message) as error:
        compress(teacher, task, layers=options.pop("layers", 2), **options)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, one_thread):  # noqa: F811
    from tiny_task import write_tiny_task

    teacher, texts = tiny
    options = _options(tmp_path, texts)
    encoder = save_tiny_teacher(tmp_path / "encoder")
    _refused(tmp_path, encoder, "is not a decoder LLM", **options)
    task = write_tiny_task(tmp_path / "data")
    _refused(tmp_path, teacher, "is a decoder LLM: compress it with --objective lm", task,
             out_dir=tmp_path / "run")
    _refused(tmp_path, teacher, "is a decoder LLM", None, objective="embedding",
             texts=texts, out_dir=tmp_path / "run")
    _refused(tmp_path, encoder, "decoder LLM baseline", task, method="shortgpt",
             out_dir=tmp_path / "run")
    _refused(tmp_path, teacher, "does not apply to --objective lm", strategy="progressive",
             **options)
    short = tmp_path / "short.txt"
    short.write_text("a.\n\nb.\n\nc.\n")
    _refused(tmp_path, teacher, "too short for one window", **{**options, "texts": str(short)})
    sliding = save_tiny_lm(tmp_path / "sliding", layer_types=[
        "full_attention", "full_attention", "sliding_attention", "sliding_attention"],
        sliding_window=4)
    _refused(tmp_path, sliding, "attention", pairs="0,1-2,3", layers=3, **options)


def test_the_cli_compresses_a_decoder_and_the_student_generates(tiny, tmp_path, one_thread):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from layergraft.cli import app

    teacher, texts = tiny
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, [
        "compress", teacher, "--objective", "lm", "--layers", "2", "--texts", texts,
        "--out", str(out), "--budget", "3 steps", "--batch-size", "4", "--max-length", "16",
        "--eval-windows", "1", "--no-ood", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "test perplexity" in result.output and "prefill" in result.output
    record = json.loads((out / "results.json").read_text())
    assert record["training"]["steps"] == 3 and record["speed"]["decode_ratio"] > 0
    student = AutoModelForCausalLM.from_pretrained(out)
    assert student.generate(torch.tensor([[1, 7]]), max_new_tokens=2).shape == (1, 4)


def test_compare_runs_the_baselines_beside_graft_and_lr_auto_probes_by_dev_perplexity(
        tiny, tmp_path, one_thread):  # noqa: F811
    from layergraft import api

    teacher, texts = tiny
    options = _options(tmp_path, texts)
    options.pop("out_dir")
    rows = api.compare(teacher, None, out=tmp_path / "grid", layers=[2],
                       methods=["shortgpt", "graft"], strategies=["none"],
                       graft_strategies=["distill"], budget="2 steps", **options)
    assert [row["run"] for row in rows] == ["teacher", "L2-shortgpt-none-s0",
                                            "L2-graft-none-s0", "L2-graft-distill-s0"]
    assert "ppl_ratio" in (tmp_path / "grid" / "report.md").read_text()
    record = api.compress(teacher, None, layers=2, out=tmp_path / "auto", budget="8 steps",
                          learning_rate="auto", **options)
    probed = record["choices"]["learning_rate"]["dev_retention"]
    assert len(probed) == 5 and all(score < 0 for score in probed.values())


def test_heal_then_distill_with_the_hidden_state_loss_charges_healing_to_the_budget(
        tiny, tmp_path, one_thread):  # noqa: F811
    from layergraft.training.lm_distill import LMDistillConfig

    teacher, texts = tiny
    record = compress(teacher, None, layers=2, budget="512 tokens",
                      heal=HealConfig(steps=4, batch_size=4),
                      lm_distill=LMDistillConfig(top_k=8, hidden_weight=0.5),
                      **_options(tmp_path, texts))
    trained = record["training"]
    assert record["settings"]["training"]["steps"] == 8  # 512 tokens: 8 batches of 4 x 16
    assert record["heal"]["charge"] == 4 and trained["steps"] == 4
    assert trained["tokens"] == 4 * 64 and trained["hidden_weight"] == 0.5
