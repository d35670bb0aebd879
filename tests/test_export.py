"""`layergraft export`: every family's ONNX graph reproduces PyTorch, int8 is smaller and runs,
the checks land in export_report.json, and bad input is one line with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import TINY_FAMILIES, make_tiny_model
from test_cli import assert_one_line_error, run_cli
from tiny_task import WORDS, save_tiny_teacher, tiny_tokenizer, train_tiny_teacher, write_tiny_task
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2Model

import layergraft
from layergraft.errors import LayergraftError

# Words of the tiny vocabulary, so the test batches are not all [UNK].
TEXTS = [" ".join(WORDS[i:i + n]) for i, n in ((0, 3), (7, 11), (20, 1), (30, 6), (50, 17))]


def wide(family: str) -> dict:
    """Config overrides for a 2-layer model 4x as wide as the tiny ones: weights, not the
    graph's ~1,500 named nodes (about 0.5 MB for DeBERTa), must dominate the file sizes that
    int8 is compared on, as they do in any real model."""
    sizes = {"hidden_size": 128, "intermediate_size": 512}
    if family == "distilbert":
        sizes = {"dim": 128, "hidden_dim": 512}
    elif family == "electra":
        sizes["embedding_size"] = 128
    return {"num_layers": 2, **sizes}


def save_tiny_family(directory, family: str, **overrides) -> str:
    """A tiny random classifier of one family with the tiny BERT WordPiece tokenizer."""
    make_tiny_model(family, **overrides).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return str(directory)


def feed(session: ort.InferenceSession, encoded) -> dict[str, np.ndarray]:
    return {i.name: encoded[i.name].numpy() for i in session.get_inputs()}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_family_exports_and_matches_pytorch(tmp_path, family):
    source = save_tiny_family(tmp_path / "model", family, **wide(family))
    out = tmp_path / "onnx"
    report = layergraft.export(source, out=out, quantize="int8")
    assert report["fp32"]["passed"] and report["fp32"]["data"] == "built-in sentences"
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    tokenizer = tiny_tokenizer()
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**{k: encoded[k] for k in report["inputs"]}).logits.numpy()
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == report["inputs"]
    assert np.abs(session.run(["logits"], feed(session, encoded))[0] - reference).max() <= 1e-4
    one = tokenizer(TEXTS[1:2], return_tensors="pt")  # batch 1, another length
    with torch.no_grad():
        single = model(**{k: one[k] for k in report["inputs"]}).logits.numpy()
    assert np.abs(session.run(["logits"], feed(session, one))[0] - single).max() <= 1e-4
    int8 = ort.InferenceSession(str(out / "model.int8.onnx"))
    assert int8.run(["logits"], feed(int8, encoded))[0].shape == reference.shape
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    assert {"config.json", "tokenizer_config.json", "export_report.json"} <= {
        p.name for p in out.iterdir()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny teacher trained on the tiny task, its task, and a 2-layer student with a manifest."""
    root = tmp_path_factory.mktemp("export")
    task = write_tiny_task(root / "task")
    teacher = train_tiny_teacher(root / "t", task)
    student = layergraft.graft(teacher, out=root / "student", layers=2, method="drop-alternate")
    return teacher, task, str(student)


def test_export_with_a_task_checks_dev_logits_and_int8(monkeypatch, capsys, tmp_path, trained):
    _, task, student = trained
    out = tmp_path / "onnx"
    code, printed, err = run_cli(monkeypatch, capsys, "export", student, "--out", str(out),
                                 "--quantize", "int8", "--task", task)
    assert code == 0, err
    assert "max abs logit difference" in printed and "agreement" in printed
    report = json.loads((out / "export_report.json").read_text())
    assert report["fp32"]["passed"] and report["fp32"]["rows"] == 32
    assert report["fp32"]["max_abs_diff"] <= 1e-4
    int8 = report["int8"]
    assert int8["checked"] and int8["passed"] and int8["agreement"] >= 0.98
    assert int8["fp32"] - int8["int8"] <= 0.01
    assert report["files"]["int8_size_ratio"] < 1
    assert report["layers"] == 2 and report["inputs"] == ["input_ids", "attention_mask",
                                                          "token_type_ids"]
    manifest = json.loads((out / "graft_manifest.json").read_text())
    assert manifest["depths"] == [4, 2]


def test_a_failed_check_is_recorded_and_exits_non_zero(monkeypatch, capsys, tmp_path, trained):
    from layergraft.deploy import verify

    teacher, _, _ = trained
    monkeypatch.setattr(verify, "TOLERANCE", -1.0)
    out = tmp_path / "onnx"
    code, _, err = run_cli(monkeypatch, capsys, "export", teacher, "--out", str(out))
    assert_one_line_error(code, err, "export verification failed")
    report = json.loads((out / "export_report.json").read_text())
    assert report["fp32"]["passed"] is False


def test_output_folder_holding_a_model_needs_overwrite(monkeypatch, capsys, tmp_path, trained):
    teacher, _, _ = trained
    args = ("export", teacher, "--out", str(tmp_path / "onnx"))
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "--overwrite")
    assert run_cli(monkeypatch, capsys, *args, "--overwrite")[0] == 0
    model_dir = tmp_path / "model_dir"  # a PyTorch model folder is refused as well
    save_tiny_teacher(model_dir)
    code, _, err = run_cli(monkeypatch, capsys, "export", teacher, "--out", str(model_dir))
    assert_one_line_error(code, err, "already holds a model")


def test_folder_without_tokenizer(monkeypatch, capsys, tmp_path):
    make_tiny_model("bert").save_pretrained(tmp_path / "bare")
    code, _, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "bare"), "--out",
                           str(tmp_path / "onnx"))
    assert_one_line_error(code, err, "has no tokenizer")
    assert not (tmp_path / "onnx").exists()


def test_unsupported_architecture(monkeypatch, capsys, tmp_path):
    GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(
        tmp_path / "gpt2")
    code, _, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "gpt2"), "--out",
                           str(tmp_path / "onnx"))
    assert_one_line_error(code, err, "unsupported architecture 'gpt2'")


def test_torch_onnx_failure_names_family_and_operator(monkeypatch, capsys, tmp_path):
    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::fancy_attention' to ONNX opset "
                           "version 17 is not supported.\nPlease feel free to request ...")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    source = save_tiny_teacher(tmp_path / "model")
    code, _, err = run_cli(monkeypatch, capsys, "export", source, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "cannot export a 'bert' model")
    assert "aten::fancy_attention" in err
    assert not (tmp_path / "o").exists()


def test_unknown_quantization_is_refused(tmp_path):
    source = save_tiny_teacher(tmp_path / "model")
    with pytest.raises(LayergraftError, match="--quantize must be one of int8"):
        layergraft.export(source, out=tmp_path / "o", quantize="int4")


def test_the_public_function_survives_importing_the_subpackage():
    import layergraft.deploy.export  # noqa: F401  (named deploy so as not to shadow it)

    assert callable(layergraft.export)


def test_the_export_folder_has_a_card_whose_numbers_are_the_report(tmp_path, trained):
    from layergraft.report.model_card import read_card_header

    teacher, task, student = trained
    out = tmp_path / "onnx"
    report = layergraft.export(student, out=out, quantize="int8", task=task)
    header = read_card_header(out)
    assert header["library_name"] == "onnx" and {"layergraft", "onnx", "int8"} <= set(
        header["tags"])
    assert header["base_model"] == teacher and header["datasets"] == [report["task"]]
    values = {m["name"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    int8 = report["int8"]
    assert values["fp32 ONNX vs PyTorch, max abs logit difference"] == report["fp32"][
        "max_abs_diff"]
    assert values[f"{int8['data']} accuracy (int8)"] == round(int8["int8"], 6)
    assert values[f"{int8['data']} accuracy (fp32)"] == round(int8["fp32"], 6)
    assert values["int8 vs fp32 prediction agreement"] == round(int8["agreement"], 6)
    text = (out / "README.md").read_text()
    assert "| 0 | 1 | 4 of layer 1 |" in text  # the provenance of drop-alternate
    assert f"{report['files']['model.int8.onnx'] / 1e6:.2f} MB" in text
    assert "ort.InferenceSession" in text and '"token_type_ids": encoded' in text
    bare = layergraft.export(teacher, out=tmp_path / "plain")  # no task, no manifest, no int8
    header = read_card_header(tmp_path / "plain")
    assert "datasets" not in header and "int8" not in header["tags"]
    assert "Where each layer came from" not in (tmp_path / "plain" / "README.md").read_text()
    assert bare["fp32"]["passed"]
