"""`bench --backends`: every model on every backend in one run, scored, and the files it writes.

No timing is asserted (the machine is noisy): the tests check which records exist, what ran
where, the quality numbers against `evaluate`, and the best-backend rule on fixed records.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_export import save_tiny_family
from tiny_task import one_thread, save_tiny_teacher, write_tiny_task
from typer.testing import CliRunner

import layergraft
from layergraft.cli import app
from layergraft.deploy.backends import BACKENDS
from layergraft.errors import LayergraftError
from layergraft.report.bench_report import best_backends, markdown
from layergraft.runtime import native_bf16

assert one_thread  # an autouse fixture
SMALL = {"repeats": 1, "warmup": 0, "examples_per_repeat": 8, "batch_sizes": (8, 1)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    task = write_tiny_task(root / "task")
    teacher = save_tiny_teacher(root / "teacher", num_layers=4)
    student = save_tiny_family(root / "student", "roberta", num_layers=2)
    return root, task, teacher, student


def test_every_model_runs_on_every_backend_and_is_scored(folders):
    root, task, teacher, student = folders
    out = root / "bench"
    rows = layergraft.bench([teacher, student], task, backends=list(BACKENDS), out=out,
                            device="cpu", threads=1, **SMALL)
    keys = {(r["model"], r["backend"], r["batch_size"]) for r in rows}
    assert len(rows) == len(keys) == 2 * len(BACKENDS) * 2
    assert keys == {(m, b, n) for m in (teacher, student) for b in BACKENDS for n in (8, 1)}
    bf16 = [r for r in rows if r["backend"] == "torch-bf16"]
    assert all(("skipped" in r) != native_bf16(torch.device("cpu")) for r in bf16)
    ran = [r for r in rows if "skipped" not in r]
    assert all(r["throughput"] > 0 and r["threads"] == 1 for r in ran)
    int8 = [r for r in ran if r["backend"] == "onnx-int8"]
    assert len(int8) == 4 and {r["precision"] for r in int8} == {"int8"}
    assert int8[0]["size_bytes"] == (out / "onnx" / "0-teacher" / "model.int8.onnx").stat(
        ).st_size
    first = next(r for r in ran if r["model"] == teacher and r["backend"] == "torch-fp32")
    assert first["throughput_ratio"] == 1.0 and first["retention"] == 1.0
    for model in (teacher, student):
        [evaluated] = layergraft.evaluate(model, task, splits=["test"], device="cpu",
                                          precision="fp32")
        scores = {r["backend"]: r["value"] for r in ran if r["model"] == model}
        accuracy = evaluated["metrics"]["accuracy"]
        # fp32 graphs reproduce the logits; the test split is what is scored
        assert scores["torch-fp32"] == pytest.approx(accuracy)
        assert scores["onnx-fp32"] == pytest.approx(accuracy)
        assert all(r["score_split"] == "test" and r["retention"] == pytest.approx(
            r["value"] / first["value"]) for r in ran if r["model"] == model)
    assert json.loads((out / "bench.json").read_text()) == rows
    with open(out / "bench.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) and "backend" in table[0]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Best backend per model" in (out / "bench.md").read_text()


def test_an_export_folder_is_reused_and_runs_only_on_onnx(folders, tmp_path):
    _, task, teacher, _ = folders
    exported = tmp_path / "onnx"
    layergraft.export(teacher, out=exported)
    rows = layergraft.bench([str(exported)], task, backends=["onnx-fp32", "torch-fp32",
                                                             "onnx-int8"], score=False,
                            device="cpu", **SMALL)
    by = {r["backend"]: r for r in rows if r["batch_size"] == 8}
    assert by["torch-fp32"]["skipped"] == "an export folder has no PyTorch weights"
    assert "no model.int8.onnx" in by["onnx-int8"]["skipped"]
    assert by["onnx-fp32"]["size_bytes"] == (exported / "model.onnx").stat().st_size
    assert by["onnx-fp32"]["throughput_ratio"] == 1.0 and "value" not in by["onnx-fp32"]


def test_best_backend_is_the_fastest_within_one_point_of_torch_fp32():
    def row(model, backend, throughput, value, batch=32, lengths="real"):
        return {"model": model, "backend": backend, "batch_size": batch, "lengths": lengths,
                "throughput": throughput, "throughput_ratio": throughput / 100,
                "latency_ms": 1.0, "metric": "accuracy", "value": value, "retention": value}

    rows = [row("t", "torch-fp32", 100, 0.900), row("t", "onnx-fp32", 200, 0.900),
            row("t", "onnx-int8", 400, 0.889),  # 1.1 points down: out
            row("t", "torch-int8", 300, 0.8905),  # 0.95 points down: in
            row("t", "onnx-int8", 9000, 0.5, batch=1),  # not the headline case
            row("t", "onnx-fp32", 9000, 0.9, lengths=64),
            row("s", "onnx-int8", 900, 0.95),  # no torch-fp32 record to compare with
            {"model": "t", "backend": "torch-bf16", "batch_size": 32, "lengths": "real",
             "skipped": "bf16 is not native"}]
    best = best_backends(rows)
    assert best["t"]["backend"] == "torch-int8" and best["s"] is None
    text = markdown(rows)
    assert "- t: **torch-int8**" in text and "within 1 point" in text
    assert "skipped: bf16 is not native" in text


def test_an_unknown_backend_is_one_line_and_a_non_zero_exit(folders, monkeypatch, capsys):
    _, task, teacher, _ = folders
    args = ["bench", teacher, "--task", task, "--backends", "torch-fp32,tensorrt"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, LayergraftError)
    assert "unknown backend 'tensorrt'" in str(result.exception)
    assert "\n" not in str(result.exception)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "unknown backend 'tensorrt'")
    code, _, err = run_cli(monkeypatch, capsys, "bench", teacher, "--task", task,
                           "--backends", "onnx-fp32,onnx-fp32")
    assert_one_line_error(code, err, "named twice")
