"""The command line: bad input is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import make_tiny_batches
from tiny_task import save_tiny_teacher
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2Model

from layergraft.cli import main
from layergraft.errors import LayergraftError


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["layergraft", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def tiny_dir(tmp_path):
    return save_tiny_teacher(tmp_path / "tiny")


def test_graft_without_data_saves_a_stock_loadable_model(monkeypatch, capsys, tiny_dir, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "graft", tiny_dir, "--layers", "2",
                           "--method", "drop-alternate", "--out", str(tmp_path / "s"))
    assert code == 0, out
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert student.config.num_hidden_layers == 2
    manifest = json.loads((tmp_path / "s" / "graft_manifest.json").read_text())
    assert manifest["depths"] == [4, 2]
    assert [layer["sources"] for layer in manifest["layers"]] == [[1], [3]]
    batch = {k: v for k, v in make_tiny_batches(student)[0].items() if k != "labels"}
    assert student.eval()(**batch).logits.shape == (4, 2)


def test_explicit_pairs_and_refusal_to_overwrite(monkeypatch, capsys, tiny_dir, tmp_path):
    args = ("graft", tiny_dir, "--pairs", "0-1,2-3", "--method", "random", "--out",
            str(tmp_path / "s"))
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "--overwrite")
    assert run_cli(monkeypatch, capsys, *args, "--overwrite")[0] == 0


@pytest.mark.parametrize(("args", "fragment"), [
    (("--pairs", "0-1,4-5", "--method", "random"), "does not fit a model with 4 layers"),
    (("--layers", "9", "--method", "random"), "between 1 and 3"),
    (("--layers", "2", "--method", "graff"), "did you mean 'graft'"),
    (("--layers", "2", "--method", "graft"), "needs data"),
    (("--layers", "2", "--method", "random", "--bias", "max"), "--bias must be one of"),
])
def test_bad_graft_requests_get_one_line_errors(monkeypatch, capsys, tiny_dir, tmp_path, args,
                                                fragment):
    code, _, err = run_cli(monkeypatch, capsys, "graft", tiny_dir, *args, "--out",
                           str(tmp_path / "s"))
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "s").exists()


def test_unknown_architecture_names_the_supported_families(monkeypatch, capsys, tmp_path):
    GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(
        tmp_path / "gpt2")
    code, _, err = run_cli(monkeypatch, capsys, "graft", str(tmp_path / "gpt2"), "--layers", "1",
                           "--method", "drop-top", "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "unsupported architecture 'gpt2'")
    assert "bert" in err and "mpnet" in err


def test_missing_model_folder(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "graft", str(tmp_path / "nothing"), "--layers",
                           "1", "--method", "drop-top", "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "no such folder")


def test_graft_keeps_weights_of_kept_layers(monkeypatch, capsys, tiny_dir, tmp_path):
    run_cli(monkeypatch, capsys, "graft", tiny_dir, "--layers", "2", "--method", "drop-top",
            "--out", str(tmp_path / "s"))
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_dir)
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    for i in range(2):
        assert torch.equal(student.bert.encoder.layer[i].output.dense.weight,
                           teacher.bert.encoder.layer[i].output.dense.weight)


def test_analyze_then_graft_from_the_analysis_on_a_local_file(monkeypatch, capsys, tmp_path):
    from tiny_task import write_tiny_task

    teacher = save_tiny_teacher(tmp_path / "teacher")
    task = write_tiny_task(tmp_path / "task")
    code, out, err = run_cli(monkeypatch, capsys, "analyze", teacher, "--task", task,
                             "--samples", "32", "--out", str(tmp_path / "ana"))
    assert code == 0, err
    assert "adjacent cosine" in out
    assert {"analysis.json", "importance.safetensors", "similarity.png"} <= {
        p.name for p in (tmp_path / "ana").iterdir()}
    code, _, err = run_cli(monkeypatch, capsys, "graft", teacher, "--layers", "2", "--analysis",
                           str(tmp_path / "ana"), "--out", str(tmp_path / "s"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "s" / "graft_manifest.json").read_text())
    assert manifest["steps"][0]["importance"]["examples"] == 32
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert student.config.num_hidden_layers == 2


def test_graft_with_a_refit_records_it_and_refuses_a_replay(monkeypatch, capsys, tmp_path):
    from tiny_task import write_tiny_task

    from layergraft.surgery.manifest import Manifest, replay

    teacher = save_tiny_teacher(tmp_path / "teacher")
    task = write_tiny_task(tmp_path / "task")
    code, _, err = run_cli(monkeypatch, capsys, "graft", teacher, "--layers", "2", "--method",
                           "drop-alternate", "--refit", "16", "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "--task")
    code, _, err = run_cli(monkeypatch, capsys, "graft", teacher, "--layers", "2", "--task",
                           task, "--samples", "16", "--refit", "16", "--out", str(tmp_path / "s"))
    assert code == 0, err
    refit = Manifest.load(tmp_path / "s").steps[-1].refit
    assert refit["samples"] == 16 and len(refit["layers"]) == 2
    assert all(r["mse_after"] < r["mse_before"] for r in refit["layers"])
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    with pytest.raises(LayergraftError, match="load the saved student"):
        replay(AutoModelForSequenceClassification.from_pretrained(teacher),
               Manifest.load(tmp_path / "s"))
    assert student.config.num_hidden_layers == 2


def test_missing_label_column_is_named(monkeypatch, capsys, tmp_path, tiny_dir):
    (tmp_path / "data.csv").write_text("sentence,target\n" + "w5 w6,1\nw7 w8,0\n" * 20)
    code, _, err = run_cli(monkeypatch, capsys, "analyze", tiny_dir, "--task",
                           str(tmp_path / "data.csv"), "--out", str(tmp_path / "ana"))
    assert_one_line_error(code, err, "label")
    assert "--label-column" in err


def test_task_label_count_must_match_the_model(monkeypatch, capsys, tmp_path):
    teacher = save_tiny_teacher(tmp_path / "three", num_labels=3)
    (tmp_path / "data.csv").write_text("text,label\n" + "w5 w6,1\nw7 w8,0\n" * 20)
    code, _, err = run_cli(monkeypatch, capsys, "analyze", teacher, "--task",
                           str(tmp_path / "data.csv"), "--out", str(tmp_path / "ana"))
    assert_one_line_error(code, err, "model predicts 0..2")


@pytest.mark.slow
def test_real_minilm_analyze_and_graft_to_three_layers(monkeypatch, capsys, tmp_path):
    """The offline MiniLM end to end from the CLI; the 3-layer model loads with stock code."""
    sentences = ["a gripping , beautifully acted film", "dull , lifeless and far too long",
                 "one of the funniest movies of the year", "a mess of a script"] * 8
    rows = [f'"{s}",{i % 2 == 0:d}' for i, s in enumerate(sentences)]
    (tmp_path / "movies.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    # its head was never trained: the same seeded random head in both commands
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "minilm", "--task",
                           str(tmp_path / "movies.csv"), "--samples", "32", "--out",
                           str(tmp_path / "ana"), "--untrained-head")
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "graft", "minilm", "--layers", "3", "--analysis",
                           str(tmp_path / "ana"), "--out", str(tmp_path / "g3"),
                           "--untrained-head")
    assert code == 0, err
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "g3")
    assert student.config.num_hidden_layers == 3
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "g3")
    logits = student.eval()(**tokenizer(sentences[:2], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_bench_measures_teacher_and_student_in_one_run(monkeypatch, capsys, tmp_path, tiny_dir):
    from tiny_task import write_tiny_task

    task = write_tiny_task(tmp_path / "task")
    run_cli(monkeypatch, capsys, "graft", tiny_dir, "--layers", "2", "--method", "drop-top",
            "--out", str(tmp_path / "s"))
    code, out, err = run_cli(monkeypatch, capsys, "bench", tiny_dir, str(tmp_path / "s"),
                             "--task", task, "--batch-sizes", "8,1", "--json",
                             str(tmp_path / "speed.json"))
    assert code == 0, err
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["layers"], r["batch_size"]) for r in rows] == [(4, 8), (2, 8), (4, 1), (2, 1)]
    assert all(r["ideal_ratio"] == 4 / r["layers"] for r in rows)
    assert out.count("\n") == 5 and "speed-up" in out


def test_finetune_then_evaluate_from_the_cli(monkeypatch, capsys, tmp_path, tiny_dir):
    from tiny_task import write_tiny_task

    task = write_tiny_task(tmp_path / "task", sizes=(128, 32, 32))
    code, out, err = run_cli(monkeypatch, capsys, "finetune", tiny_dir, "--task", task,
                             "--max-steps", "40", "--lr", "3e-3", "--batch-size", "16",
                             "--out", str(tmp_path / "teacher"))
    assert code == 0, err
    record = json.loads((tmp_path / "teacher" / "finetune_results.json").read_text())
    assert record["global_step"] == 40
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "teacher"),
                             "--task", task, "--split", "dev", "--split", "test", "--json",
                             str(tmp_path / "eval.json"))
    assert code == 0, err
    records = json.loads((tmp_path / "eval.json").read_text())
    assert [r["split"] for r in records] == ["dev", "test"]
    assert records[0]["metrics"]["accuracy"] == pytest.approx(record["dev"]["accuracy"])
    assert records[0]["metrics"]["accuracy"] > 0.8  # the toy task is learnt
    assert "accuracy" in out


def test_compress_from_the_cli_and_regression_flag(monkeypatch, capsys, tmp_path, tiny_dir):
    from tiny_task import write_tiny_task

    task = write_tiny_task(tmp_path / "task")
    code, out, err = run_cli(monkeypatch, capsys, "compress", tiny_dir, "--task", task,
                             "--layers", "2", "--method", "drop-alternate", "--strategy",
                             "none", "--out", str(tmp_path / "s"))
    assert code == 0, err
    record = json.loads((tmp_path / "s" / "results.json").read_text())
    assert record["student"]["layers"] == 2 and record["strategy"] == "none"
    assert "test accuracy" not in out and f"{100 * record['dev']['metrics']['accuracy']:.2f}" in out
    code, _, err = run_cli(monkeypatch, capsys, "compress", tiny_dir, "--task", task,
                           "--layers", "2", "--method", "drop-alternate", "--budget", "2 steps",
                           "--lr", "1e-3", "--out", str(tmp_path / "d"))
    assert code == 0, err
    record = json.loads((tmp_path / "d" / "results.json").read_text())
    assert record["settings"]["training"]["learning_rate"] == 1e-3
    # integer labels read as scores: a regression task that a 2-class head cannot score
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", tiny_dir, "--task", task,
                           "--regression")
    assert_one_line_error(code, err, "regression")


@pytest.mark.parametrize("method", ["drop-alternate", "random"])
@pytest.mark.parametrize("layers", ["0", "4"])
def test_a_depth_out_of_range_names_the_allowed_depths(monkeypatch, capsys, tiny_dir, tmp_path,
                                                       method, layers):
    code, _, err = run_cli(monkeypatch, capsys, "graft", tiny_dir, "--layers", layers,
                           "--method", method, "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "--layers must be between 1 and 3 for this 4-layer model")
    assert not (tmp_path / "s").exists()
