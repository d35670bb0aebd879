"""`export --optimize` and static int8: the fused graphs reproduce PyTorch within 1e-4, what
the optimizer fused is reported, static int8 (QDQ) is calibrated on the task and checked
against fp32, and the graphs run as bench backends named onnx-[opt-]PRECISION."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_export import TEXTS, feed, save_tiny_family, trained, wide
from tiny_task import one_thread, tiny_tokenizer
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2Model

import layergraft
from layergraft.deploy.backends import BACKENDS, ONNX_FILES
from layergraft.deploy.optimize import optimize_onnx
from layergraft.deploy.variants import GRAPHS, parse_quantize
from layergraft.errors import LayergraftError
from layergraft.report.model_card import read_card_header

assert one_thread and trained  # fixtures
ATTENTION_FUSES = ("bert", "roberta", "distilbert")


def fused_ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet", "distilbert"])
def test_the_fused_graph_matches_pytorch(tmp_path, family):
    source = save_tiny_family(tmp_path / "model", family, **wide(family))
    out = tmp_path / "onnx"
    report = layergraft.export(source, out=out, optimize=True)
    assert report["opt-fp32"]["passed"] and report["opt-fp32"]["max_abs_diff"] <= 1e-4
    fusions = report["optimizer"]["fusions"]
    assert fusions["SkipLayerNormalization"] >= 2 and "SkipLayerNormalization" in fused_ops(
        out / "model.opt.onnx")
    if family in ATTENTION_FUSES:
        assert fusions["Attention"] == 2 and "note" not in report["optimizer"]
    else:  # MPNet's relative-position bias is outside the BERT attention pattern
        assert "Attention" not in fusions and "no Attention fusion" in report["optimizer"]["note"]
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    for texts in (TEXTS, TEXTS[1:2]):  # another batch size and length than the check's
        encoded = tiny_tokenizer()(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            reference = model(**{k: encoded[k] for k in report["inputs"]}).logits.numpy()
        session = ort.InferenceSession(str(out / "model.opt.onnx"))
        assert np.abs(session.run(["logits"], feed(session, encoded))[0] - reference).max() <= 1e-4


def test_static_int8_is_calibrated_on_the_task_and_checked(monkeypatch, capsys, tmp_path,
                                                           trained):
    _, task, student = trained
    out = tmp_path / "onnx"
    code, printed, err = run_cli(monkeypatch, capsys, "export", student, "--out", str(out),
                                 "--optimize", "--quantize", "int8,int8-static", "--task", task)
    assert code == 0, err
    report = json.loads((out / "export_report.json").read_text())
    assert {g.name for g in GRAPHS} <= set(report) and all(
        (out / g.file).is_file() for g in GRAPHS)
    assert report["static_int8"]["calibration"].endswith("train")
    assert report["static_int8"]["rows"] == 64 and report["static_int8"]["format"] == "QDQ"
    for name in ("int8-static", "opt-int8", "opt-int8-static"):
        record = report[name]
        assert record["checked"] and record["passed"], (name, record)
        assert report["files"][f"{name}_size_ratio"] < 1
    assert "QuantizeLinear" in fused_ops(out / "model.int8-static.onnx")
    for name in ("fp32", "opt-fp32", "int8", "int8-static", "opt-int8", "opt-int8-static"):
        assert any(line.startswith(f"{name}") for line in printed.splitlines()), printed
    assert "optimizer: ONNX Runtime's transformer optimizer" in printed
    header = read_card_header(out)
    assert "optimized" in header["tags"] and "int8" in header["tags"]
    values = {m["name"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert "opt-fp32 ONNX vs PyTorch, max abs logit difference" in values
    assert "int8-static vs fp32 prediction agreement" in values
    assert "int8-static: ONNX Runtime static quantisation (QDQ)" in (out / "README.md").read_text()


def test_fused_and_static_graphs_run_as_bench_backends(tmp_path, trained):
    _, task, student = trained
    names = ["onnx-fp32", "onnx-opt-fp32", "onnx-opt-int8", "onnx-int8-static"]
    rows = layergraft.bench([student], task, backends=names, device="cpu", threads=1,
                            repeats=1, warmup=0, examples_per_repeat=8, batch_sizes=(8,),
                            out=tmp_path / "bench")
    by = {r["backend"]: r for r in rows}
    assert set(by) == set(names) and not any("skipped" in r for r in rows)
    assert by["onnx-opt-fp32"]["value"] == pytest.approx(by["onnx-fp32"]["value"])
    assert by["onnx-opt-int8"]["precision"] == "int8" and by["onnx-opt-int8"]["fused"]
    assert by["onnx-int8-static"]["precision"] == "int8-static"
    assert "fused" not in by["onnx-int8-static"]
    exported = tmp_path / "bench" / "onnx" / "0-student"
    assert by["onnx-int8-static"]["size_bytes"] == (exported / "model.int8-static.onnx").stat(
        ).st_size


def test_the_backend_names_follow_one_scheme():
    onnx_backends = [b for b in BACKENDS if b.startswith("onnx-")]
    assert onnx_backends == ["onnx-fp32", "onnx-int8", "onnx-int8-static", "onnx-opt-fp32",
                             "onnx-opt-int8", "onnx-opt-int8-static"]
    assert ONNX_FILES["onnx-fp32"] == "model.onnx" and ONNX_FILES["onnx-int8"] == (
        "model.int8.onnx")
    assert ONNX_FILES["onnx-opt-int8-static"] == "model.opt.int8-static.onnx"


def test_bad_requests_are_one_line(monkeypatch, capsys, tmp_path):
    assert parse_quantize("int8, int8-static") == ("int8", "int8-static")
    with pytest.raises(LayergraftError, match="--quantize must be one of int8, int8-static"):
        parse_quantize("int8,int4")
    gpt2 = GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10))
    with pytest.raises(LayergraftError, match="no fusions for 'gpt2' models") as error:
        optimize_onnx(gpt2, tiny_tokenizer(), tmp_path / "x.onnx", ["input_ids"])
    assert "\n" not in str(error.value)
    source = save_tiny_family(tmp_path / "model", "bert", num_layers=1)
    code, _, err = run_cli(monkeypatch, capsys, "export", source, "--out", str(tmp_path / "o"),
                           "--quantize", "int4")
    assert_one_line_error(code, err, "--quantize must be one of")
    assert not (tmp_path / "o").exists()
