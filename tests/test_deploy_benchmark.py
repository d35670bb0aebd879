"""benchmarks/deploy.py: the targets judged from one CPU's results file, and its section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from report import deploy_section as deploy  # noqa: E402


def _row(model, backend, layers, ratio, value, batch=32):
    return {"model": model, "backend": backend, "batch_size": batch, "lengths": "real",
            "layers": layers, "throughput": 100 * ratio, "throughput_ratio": ratio,
            "latency_ms": 1.0, "size_bytes": 10**6, "metric": "accuracy", "value": value,
            "retention": value / 0.9}


RECORD = {"teacher": "t", "students": ["w/s3", "w/s2"], "repeats": 3,
          "machine": {"cpu": "AVX2", "platform": "linux", "torch_threads": 2,
                      "versions": {"torch": "2"}, "date": "2026-01-01"},
          "records": [_row("t", "torch-fp32", 6, 1.0, 0.9),
                      {"model": "t", "backend": "torch-bf16", "batch_size": 32,
                       "lengths": "real", "layers": 6, "skipped": "bf16 is not native"},
                      _row("w/s3", "torch-fp32", 3, 2.0, 0.89),
                      _row("w/s3", "onnx-int8", 3, 6.5, 0.886),  # 6.5x, 98.4%: MET
                      _row("w/s3", "torch-int8", 3, 2.5, 0.87),  # 2 points lost: MISSED
                      _row("w/s2", "torch-fp32", 2, 3.0, 0.88),
                      _row("w/s2", "onnx-int8", 2, 9.0, 0.88),  # 9x: MISSED
                      _row("w/s2", "onnx-int8", 2, 50.0, 0.2, batch=1)]}


def test_targets_are_met_or_missed_from_the_records():
    status = {target: (measured, verdict) for target, _, measured, verdict in
              deploy.targets(RECORD)}
    assert status["s3 (3 layers) onnx-int8 vs teacher torch-fp32"] == ("6.50x, 98.44%", "MET")
    assert status["s2 (2 layers) onnx-int8 vs teacher torch-fp32"][1] == "MISSED"
    assert status["s3 (3 layers) onnx-int8 vs its torch-fp32"] == ("+0.40 points lost", "MET")
    assert status["s3 (3 layers) torch-int8 vs its torch-fp32"][1] == "MISSED"
    assert status["s2 (2 layers) torch-int8 vs its torch-fp32"] == ("not run", "MISSED")
    assert status["s2 (2 layers) onnx-int8 vs its torch-fp32"] == ("+0.00 points lost", "MET")


def test_the_speed_target_takes_the_fastest_onnx_backend_that_keeps_accuracy():
    fused = {**RECORD, "records": [*RECORD["records"],
                                   _row("w/s2", "onnx-opt-int8", 2, 12.0, 0.86),  # 2 points lost
                                   _row("w/s2", "onnx-opt-int8-static", 2, 10.5, 0.875)]}
    status = {target: (measured, verdict) for target, _, measured, verdict in
              deploy.targets(fused)}
    assert status["s2 (2 layers) onnx-opt-int8-static vs teacher torch-fp32"] == (
        "10.50x, 97.22%", "MET")
    assert status["s2 (2 layers) onnx-opt-int8 vs its torch-fp32"] == (
        "+2.00 points lost", "MISSED")
    assert status["s2 (2 layers) onnx-opt-int8-static vs its torch-fp32"][1] == "MET"
    assert "s3 (3 layers) onnx-opt-int8 vs its torch-fp32" not in status  # not run for s3


def test_the_section_reads_one_results_file_per_cpu(tmp_path):
    assert deploy.section(tmp_path).endswith("Not run yet.")
    deploy.results_path("AVX2", tmp_path).write_text(json.dumps(RECORD))
    other = {**RECORD, "machine": {**RECORD["machine"], "cpu": "AVX512 AVX512-BF16"}}
    deploy.results_path("AVX512 AVX512-BF16", tmp_path).write_text(json.dumps(other))
    text = deploy.section(tmp_path, "figs")
    assert text.index("### CPU AVX2") < text.index("### CPU AVX512 AVX512-BF16")
    assert "Machine: AVX2, 2 threads" in text and "![speed vs retention" in text
    assert "(figs/deploy_pareto-avx2.png)" in text
    assert "(figs/deploy_pareto-avx512-avx512-bf16.png)" in text
    assert "| s3 | onnx-int8 | 32 | 650.0 | 6.50x |" in text
    assert "| MET |" in text and "| MISSED |" in text
    assert "| t | torch-bf16 | 32 | bf16 is not native |" in text
    assert "- w/s3: **onnx-int8**" in text  # 0.4 points down, the fastest within 1 point
