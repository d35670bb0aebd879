"""Predictions come back in row order and match unpadded single-row forwards; records add up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import NEEDS_NATIVE_BF16, make_tiny_model
from tiny_task import one_thread, save_tiny_teacher, write_tiny_task
from transformers import AutoTokenizer

from layergraft.data.encoding import encode
from layergraft.data.metrics import compute_metrics
from layergraft.data.tasks import TASKS, load_task
from layergraft.errors import LayergraftError
from layergraft.objectives.task.evaluation import (
    agreement,
    evaluate_model,
    format_table,
    predict,
    save_results,
)

assert one_thread  # an autouse fixture


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(save_tiny_teacher(tmp_path_factory.mktemp("base")))


@pytest.fixture
def task(tmp_path):
    return load_task(write_tiny_task(tmp_path / "task", sizes=(4, 23, 5)))


def test_predict_matches_single_row_forwards_in_row_order(tokenizer, task):
    model = make_tiny_model("bert", num_labels=2, num_layers=2)
    dev = encode(task, tokenizer)["dev"]
    preds = predict(model, dev, tokenizer, batch_size=5, progress=False)
    assert preds.shape == (23, 2) and preds.dtype == np.float32
    with torch.no_grad():
        for i, row in enumerate(dev):
            inputs = {k: torch.tensor([row[k]]) for k in
                      ("input_ids", "attention_mask", "token_type_ids")}
            np.testing.assert_allclose(preds[i], model(**inputs).logits[0].numpy(), atol=1e-5)


@NEEDS_NATIVE_BF16
def test_bf16_predictions_stay_close_to_fp32(tokenizer, task):
    model = make_tiny_model("bert", num_labels=2, num_layers=2)
    dev = encode(task, tokenizer)["dev"]
    preds = predict(model, dev, tokenizer, batch_size=5, progress=False)
    fast = predict(model, dev, tokenizer, batch_size=5, progress=False, precision="bf16")
    np.testing.assert_allclose(fast, preds, atol=0.05)


def test_agreement_by_hand():
    teacher = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.1], [0.0, 3.0]])
    student = np.array([[0.0, 2.0], [0.5, 0.0], [0.1, 0.2], [0.0, 1.0]])
    assert agreement(student, teacher, TASKS["sst2"]) == 0.75
    stsb = TASKS["stsb"]
    assert agreement(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [4.0]]),
                     stsb) == pytest.approx(9 / np.sqrt(84))
    with pytest.raises(ValueError, match="shape"):
        agreement(student[:3], teacher, TASKS["sst2"])


def test_evaluate_model_record(tokenizer, task, tmp_path):
    model = make_tiny_model("bert", num_labels=2, num_layers=3)
    record = evaluate_model(model, tokenizer, task, "dev", batch_size=4, progress=False,
                            keep_predictions=True)
    dev = encode(task, tokenizer, splits=["dev"])["dev"]
    preds = predict(model, dev, tokenizer, progress=False)
    assert record["metrics"] == compute_metrics(task.spec.metrics, preds, np.asarray(dev["labels"]),
                                                regression=task.spec.is_regression)
    np.testing.assert_allclose(record["predictions"], preds, atol=1e-6)
    assert (record["task"], record["split"], record["examples"]) == ("task", "dev", 23)
    assert record["model"]["layers"] == 3
    assert record["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert {"layergraft", "transformers", "torch", "datasets"} <= set(record["versions"])
    save_results(record, tmp_path / "out" / "dev.json")
    assert json.loads((tmp_path / "out" / "dev.json").read_text()) == record


def test_evaluate_model_refuses_what_it_cannot_score(tokenizer, task):
    task.splits["test"] = task.splits["test"].remove_columns("label")
    model = make_tiny_model("bert", num_labels=2, num_layers=1)
    with pytest.raises(LayergraftError, match="has no labels"):
        evaluate_model(model, tokenizer, task, "test")
    with pytest.raises(LayergraftError, match="no 'validation' split"):
        evaluate_model(model, tokenizer, task, "validation")
    with pytest.raises(LayergraftError, match="regression head"):
        evaluate_model(make_tiny_model("bert", num_labels=1, num_layers=1), tokenizer, task)


def test_format_table():
    records = [
        {"task": "mrpc", "split": "dev", "examples": 408,
         "metrics": {"f1": 0.9012, "accuracy": 0.8603}},
        {"task": "movie-sentiment", "split": "test", "examples": 1061,
         "metrics": {"accuracy": 0.85}},
    ]
    assert format_table(records).splitlines() == [
        "task             split  examples     f1  accuracy",
        "---------------  -----  --------  -----  --------",
        "mrpc             dev         408  90.12     86.03",
        "movie-sentiment  test       1061      -     85.00",
    ]
