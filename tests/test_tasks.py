"""The task registry, GLUE loading without a network, local files, and bad-input errors."""

from __future__ import annotations

import dataclasses
import json
import logging

import datasets
import datasets.config
import huggingface_hub.constants
import pytest
from transformers import BertConfig

from layergraft.data.tasks import TASKS, check_model_fits, get_spec, glue_average, load_task
from layergraft.errors import LayergraftError

GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli")


# ---- registry ------------------------------------------------------------------------------

def test_glue_registry_has_official_columns_labels_and_metrics():
    expected = {  # task: (text, pair, classes, metrics)
        "cola": ("sentence", None, 2, ("matthews",)),
        "sst2": ("sentence", None, 2, ("accuracy",)),
        "mrpc": ("sentence1", "sentence2", 2, ("f1", "accuracy")),
        "stsb": ("sentence1", "sentence2", 1, ("pearson", "spearman")),
        "qqp": ("question1", "question2", 2, ("f1", "accuracy")),
        "mnli": ("premise", "hypothesis", 3, ("accuracy",)),
        "mnli-mm": ("premise", "hypothesis", 3, ("accuracy",)),
        "qnli": ("question", "sentence", 2, ("accuracy",)),
        "rte": ("sentence1", "sentence2", 2, ("accuracy",)),
        "wnli": ("sentence1", "sentence2", 2, ("accuracy",)),
    }
    for name, (text, pair, classes, metrics) in expected.items():
        spec = TASKS[name]
        assert (spec.text_column, spec.pair_column, spec.num_labels, spec.metrics) == (
            text, pair, classes, metrics), name
        assert (spec.dataset, spec.source) == ("nyu-mll/glue", "glue")
    assert TASKS["stsb"].is_regression and not TASKS["cola"].is_regression


def test_mnli_mismatched_is_mnli_with_other_eval_splits():
    mnli, mm = TASKS["mnli"], TASKS["mnli-mm"]
    changed = {f.name for f in dataclasses.fields(mnli)
               if getattr(mnli, f.name) != getattr(mm, f.name)}
    assert changed == {"name", "splits", "group", "description"}
    assert dict(mm.splits)["dev"] == "validation_mismatched" and mm.config == "mnli"


def test_unknown_task_names_close_matches():
    with pytest.raises(LayergraftError, match="did you mean sst2") as error:
        load_task("sst")
    assert "movie-sentiment" in str(error.value) and "\n" not in str(error.value)
    assert get_spec("SST-2") is TASKS["sst2"]
    with pytest.raises(LayergraftError, match="no such file"):
        load_task("missing/data.csv")


def test_glue_average_averages_metrics_then_tasks_with_mnli_as_one_task():
    results = {
        "cola": {"matthews": 0.5},
        "mrpc": {"f1": 0.9, "accuracy": 0.8, "loss": 9.0},  # extra entries are ignored
        "stsb": {"pearson": 0.88, "spearman": 0.86},
        "mnli": {"accuracy": 0.8},
        "mnli-mm": {"accuracy": 0.82},
    }
    assert glue_average(results) == pytest.approx((0.5 + 0.85 + 0.87 + 0.81) / 4)
    with pytest.raises(LayergraftError, match="lack its metrics f1"):
        glue_average({"mrpc": {"accuracy": 0.8}})


# ---- GLUE through datasets, without a network ------------------------------------------------

def glue_layout(config: str) -> datasets.DatasetDict:
    """A tiny DatasetDict with the columns, label features and split names of nyu-mll/glue."""
    spec = TASKS[config]
    label = (datasets.Value("float32") if spec.is_regression
             else datasets.ClassLabel(names=list(spec.label_names)))
    columns = [spec.text_column] + ([spec.pair_column] if spec.pair_column else [])
    features = datasets.Features({**{c: datasets.Value("string") for c in columns},
                                  "label": label, "idx": datasets.Value("int32")})
    names = (["train", "validation_matched", "validation_mismatched", "test_matched",
              "test_mismatched"] if config == "mnli" else ["train", "validation", "test"])

    def split(name: str, rows: int) -> datasets.Dataset:
        labels = ([-1] * rows if name.startswith("test")
                  else [float(i) / 2 if spec.is_regression else i % spec.num_labels
                        for i in range(rows)])
        data = {c: [f"{name} {c} {i}" for i in range(rows)] for c in columns}
        return datasets.Dataset.from_dict({**data, "label": labels, "idx": list(range(rows))},
                                          features=features)

    return datasets.DatasetDict({n: split(n, 6 + i) for i, n in enumerate(names)})


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return glue_layout(name)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("name", GLUE)
def test_glue_tasks_load_into_the_standard_layout(fake_hub, name):
    task = load_task(name)
    spec = task.spec
    assert fake_hub == [("nyu-mll/glue", spec.config)]
    assert list(task.splits) == ["train", "dev", "test"]
    columns = ["text", "text_pair", "label"] if spec.pair_column else ["text", "label"]
    assert task.splits["train"].column_names == columns
    assert task.splits["test"].column_names == columns[:-1]  # hidden test labels dropped
    assert task.labeled("dev") and not task.labeled("test")
    label = task.splits["dev"].features["label"]
    assert label == datasets.Value("float32" if spec.is_regression else "int64")
    source_dev = dict(spec.splits)["dev"]
    assert task.splits["dev"][0]["text"] == f"{source_dev} {spec.text_column} 0"
    if spec.pair_column:
        assert task.splits["dev"][0]["text_pair"] == f"{source_dev} {spec.pair_column} 0"


def test_glue_without_network_says_what_to_do(monkeypatch):
    # The real datasets code path, with the hub switched off as on a machine with no network.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LayergraftError, match="unreachable") as error:
        load_task("rte")
    message = str(error.value)
    assert "local CSV/TSV/JSONL file" in message and "movie-sentiment, movie-rating" in message
    assert "\n" not in message


def test_check_model_fits():
    check_model_fits(TASKS["mnli"], BertConfig(num_labels=3))
    check_model_fits(TASKS["stsb"], BertConfig(num_labels=1))
    with pytest.raises(LayergraftError, match="regression .* 2-class head"):
        check_model_fits(TASKS["stsb"], BertConfig(num_labels=2))
    with pytest.raises(LayergraftError, match="classification .* regression head"):
        check_model_fits(TASKS["sst2"], BertConfig(num_labels=1))
    with pytest.raises(LayergraftError, match=r"labels 0\.\.2 but the model predicts 0\.\.1"):
        check_model_fits(TASKS["mnli"], BertConfig(num_labels=2))


# ---- local files ------------------------------------------------------------------------------

def write_csv(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header), *(sep.join(map(str, r)) for r in rows)]) + "\n")
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_with_text_labels_becomes_sorted_classes(tmp_path):
    rows = [(f"review {i}", ["pos", "neg", "meh"][i % 3]) for i in range(30)]
    task = load_task(str(write_csv(tmp_path / "reviews.csv", ["text", "label"], rows)))
    assert task.spec.name == "reviews" and task.spec.label_names == ("meh", "neg", "pos")
    assert task.spec.num_labels == 3 and task.spec.metrics == ("accuracy", "macro_f1")
    by_text = dict(rows)
    for row in task.splits["train"]:
        assert task.spec.label_names[row["label"]] == by_text[row["text"]]


def test_tsv_folder_with_pairs_and_an_unlabeled_test(tmp_path):
    header = ["sentence", "sentence2", "label"]
    write_csv(tmp_path / "train.tsv", header, [(f"a{i}", f"b{i}", i % 2) for i in range(8)], "\t")
    write_csv(tmp_path / "validation.tsv", header, [("c, d", "e", 1), ("f", "g", 0)], "\t")
    write_csv(tmp_path / "test.tsv", header[:2], [("h", "i")], "\t")
    task = load_task(str(tmp_path))
    assert task.notice is None and task.spec.num_labels == 2
    assert {s: len(d) for s, d in task.splits.items()} == {"train": 8, "dev": 2, "test": 1}
    assert task.splits["dev"][0] == {"text": "c, d", "text_pair": "e", "label": 1}
    assert not task.labeled("test") and task.splits["test"].column_names == ["text", "text_pair"]


def test_jsonl_regression_is_inferred_and_whole_numbers_are_classes(tmp_path):
    floats = write_jsonl(tmp_path / "scores.jsonl",
                         [{"text": f"t{i}", "label": i / 4} for i in range(20)])
    task = load_task(str(floats))
    assert task.spec.is_regression and task.spec.metrics == ("pearson", "spearman")
    assert task.splits["train"].features["label"] == datasets.Value("float32")
    whole = write_jsonl(tmp_path / "whole.jsonl",
                        [{"text": f"t{i}", "label": float(i % 4)} for i in range(20)])
    assert load_task(str(whole)).spec.num_labels == 4
    assert load_task(str(whole), regression=True).spec.is_regression
    with pytest.raises(LayergraftError, match="not whole numbers"):
        load_task(str(floats), regression=False)


def test_named_columns_and_column_errors(tmp_path):
    path = write_csv(tmp_path / "data.csv", ["body", "stars"],
                     [(f"x{i}", i % 2) for i in range(20)])
    with pytest.raises(LayergraftError) as error:
        load_task(str(path))
    assert "columns: body, stars" in str(error.value) and "--text-column" in str(error.value)
    with pytest.raises(LayergraftError, match="no label column .* --label-column"):
        load_task(str(path), text_column="body")
    with pytest.raises(LayergraftError, match="no column 'rating' .* fix --label-column"):
        load_task(str(path), text_column="body", label_column="rating")
    task = load_task(str(path), text_column="body", label_column="stars")
    assert task.splits["train"].column_names == ["text", "label"]


def test_bad_labels_and_files(tmp_path):
    negative = write_csv(tmp_path / "neg.csv", ["text", "label"],
                         [(f"x{i}", i % 3 - 1) for i in range(20)])
    with pytest.raises(LayergraftError, match="0..K-1"):
        load_task(str(negative))
    with pytest.raises(LayergraftError, match="too few"):
        load_task(str(write_csv(tmp_path / "tiny.csv", ["text", "label"], [("a", 0)])))
    with pytest.raises(LayergraftError, match="unsupported file type"):
        load_task(str(write_csv(tmp_path / "data.txt", ["text", "label"], [("a", 0)])))
    (tmp_path / "folder").mkdir()
    write_csv(tmp_path / "folder" / "train.csv", ["text", "label"], [("a", 0), ("b", 1)])
    with pytest.raises(LayergraftError, match="needs train.* and dev.*"):
        load_task(str(tmp_path / "folder"))


def test_single_file_split_is_seeded_deterministic_and_announced(tmp_path, caplog):
    path = write_csv(tmp_path / "all.csv", ["text", "label"],
                     [(f"row {i}", i % 2) for i in range(100)])
    with caplog.at_level(logging.WARNING, logger="layergraft.data.tasks"):
        first = load_task(str(path))
    assert [r.getMessage() for r in caplog.records] == [
        "all.csv has no dev/test files: its 100 rows were split 80/10/10 into train/dev/test "
        "with seed 0"]
    texts = {s: list(d["text"]) for s, d in first.splits.items()}
    assert {s: len(t) for s, t in texts.items()} == {"train": 80, "dev": 10, "test": 10}
    assert sorted(sum(texts.values(), [])) == sorted(f"row {i}" for i in range(100))
    again = load_task(str(path))
    assert {s: list(d["text"]) for s, d in again.splits.items()} == texts
    other = load_task(str(path), seed=1)
    assert list(other.splits["dev"]["text"]) != texts["dev"]
