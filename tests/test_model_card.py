"""Model cards: the Hub's format, every number read from the manifest and the results."""

from __future__ import annotations

import json

from tiny_task import one_thread, train_tiny_teacher, write_tiny_task

from layergraft.pipeline.compress import compress
from layergraft.pipeline.workflows import graft_path
from layergraft.report.model_card import read_card_header
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.training.train import TrainConfig

assert one_thread  # an autouse fixture


def test_compress_and_graft_write_a_card_whose_numbers_are_the_results(tmp_path):
    task = write_tiny_task(tmp_path / "task")
    teacher = train_tiny_teacher(tmp_path, task)
    record = compress(teacher, task, layers=2, strategy="none", out_dir=tmp_path / "run",
                      speed=False, progress=False, precision="fp32",
                      cache_dir=tmp_path / "cache",
                      training=TrainConfig(output_dir="", max_length=24, progress=False),
                      analysis=AnalysisSettings(samples=32, batch_size=16, max_length=24,
                                                progress=False))
    header = read_card_header(tmp_path / "run")
    assert header["library_name"] == "transformers" and "layergraft" in header["tags"]
    assert header["base_model"] == json.loads(
        (tmp_path / "run" / "graft_manifest.json").read_text())["teacher"]["name_or_path"]
    metrics = {m["name"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    for split in ("dev", "test"):
        for name, value in record[split]["metrics"].items():
            assert metrics[f"{split} {name}"] == round(value, 6)
    text = (tmp_path / "run" / "README.md").read_text()
    assert f"{record['dev']['retention']['accuracy']:.4f}" in text
    assert "| 0 | 0, 1 |" in text and "How to load it" in text
    graft_path(teacher, tmp_path / "alt", layers=2, method="drop-alternate")
    assert read_card_header(tmp_path / "alt")["pipeline_tag"] == "text-classification"
    assert "of layer 1" in (tmp_path / "alt" / "README.md").read_text()
