"""Bad input a new user meets, each answered in one line with exit status 2 and nothing
written: a mistyped folder, an empty or binary data file, weights that hold pickled code, a
model with fewer positions than the texts have tokens; and a quick look at an embedding
model that skips the long evaluation parts when asked."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from helpers import FIRST_WORD_ID, TINY_FAMILIES, VOCAB, make_tiny_model
from test_cli import assert_one_line_error, run_cli
from tiny_task import one_thread, save_tiny_teacher, write_tiny_task  # noqa: F401
from transformers import BertTokenizer

from layergraft.data.encoding import token_limit, usable_positions
from layergraft.models import resolve_model

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> str:
    return write_tiny_task(tmp_path_factory.mktemp("task") / "task", sizes=(16, 8, 8))


# 1. a local path that does not exist

@pytest.mark.parametrize("name", ["./nope", "../nope/model", "~/layergraft-no-such-model",
                                  "ABSOLUTE", "one/two/three"])
def test_a_missing_folder_is_named_as_one(monkeypatch, capsys, tmp_path, task_dir, name):
    name = str(tmp_path / "nothing") if name == "ABSOLUTE" else name
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "compress", name, "--task", task_dir,
                           "--layers", "2", "--out", str(out), "--device", "cpu")
    assert_one_line_error(code, err, f"no such folder: '{name}' does not exist")
    assert "Repo id" not in err and not out.exists()


def test_hub_names_and_existing_folders_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2")
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model("./here") == "./here"
    assert resolve_model("here") == "here"


# 2. a data file with a header and no rows, a binary file named .csv, an empty file

@pytest.mark.parametrize(("content", "fragment"), [
    (b"text,label\n", "has a header but no rows"),
    (b"text,label\n\n  \n", "has a header but no rows"),
    (bytes(range(256)) * 40, "is not UTF-8 text"),
    ("text,label\nun caf\u00e9,1\n".encode("latin-1"), "is not UTF-8 text"),
    (b"", "is empty"),
])
def test_an_empty_or_binary_data_file_is_one_line(monkeypatch, capsys, tmp_path, tiny_dir,
                                                   content, fragment):
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "compress", tiny_dir, "--task", str(data),
                           "--layers", "2", "--out", str(out), "--device", "cpu")
    assert_one_line_error(code, err, f"{data} {fragment}")
    assert not out.exists()


def test_a_folder_whose_train_file_has_no_rows(monkeypatch, capsys, tmp_path, tiny_dir):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\n")
    (folder / "dev.csv").write_text("text,label\nw1 w2,1\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", tiny_dir, "--task", str(folder),
                           "--json", str(tmp_path / "eval.json"), "--device", "cpu")
    assert_one_line_error(code, err, "train.csv has a header but no rows")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", tiny_dir, "--task",
                           str(tmp_path / "empty.jsonl"), "--device", "cpu")
    assert_one_line_error(code, err, "is empty: give one JSON object a line")
    assert not (tmp_path / "eval.json").exists()


# 3. weights that hold pickled code

class _Payload:
    """What a malicious checkpoint carries: unpickling it would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_pickled_code(folder: Path, marker: Path) -> None:
    """Replace the folder's model.safetensors with a pytorch_model.bin of the same tensors
    plus a pickled object whose loading runs code."""
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**tensors, "payload": _Payload(marker)}, folder / "pytorch_model.bin")


def test_pickled_code_is_refused_in_one_line(monkeypatch, capsys, tmp_path, task_dir):
    folder = Path(save_tiny_teacher(tmp_path / "evil"))
    marker = tmp_path / "code-ran"
    _plant_pickled_code(folder, marker)
    capsys.readouterr()  # what saving the folder printed
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(folder), "--task", task_dir,
                           "--layers", "2", "--out", str(out), "--device", "cpu")
    assert_one_line_error(code, err, "pytorch_model.bin holds pickled code")
    assert "safetensors is the safe format" in err and "model.safetensors" in err
    assert len(err.strip().splitlines()) <= 2  # the device line, then the error
    assert not marker.exists() and not out.exists()


def test_a_sentence_transformers_folder_with_pickled_code(monkeypatch, capsys, tmp_path,
                                                          st_folder, texts_file):
    import shutil

    folder = tmp_path / "evil-st"
    shutil.copytree(st_folder, folder)
    marker = tmp_path / "code-ran"
    weights = next(folder.rglob("model.safetensors")).parent
    _plant_pickled_code(weights, marker)
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(folder), "--objective",
                           "embedding", "--texts", str(texts_file), "--layers", "2",
                           "--out", str(out), "--device", "cpu")
    assert_one_line_error(code, err, "holds pickled code")
    assert not marker.exists() and not out.exists()


# 4. a model with 64 positions and texts longer than that

def char_tokenizer() -> BertTokenizer:
    """A WordPiece tokenizer of single letters: every letter is a token, so a sentence of a
    few dozen words is hundreds of tokens."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [*LETTERS, *(f"##{c}" for c in LETTERS)]
    return BertTokenizer(vocab={w: i for i, w in enumerate(specials + pieces)})


def save_char_model(folder: Path, family: str = "bert", head: bool = True) -> str:
    """A tiny random model of a family (64 positions) with `char_tokenizer`; `head=False`
    saves the bare encoder."""
    model = make_tiny_model(family)
    (model if head else model.base_model).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def long_task(tmp_path_factory) -> str:
    """train/dev/test CSVs of sentences of 100-250 letter tokens."""
    folder = tmp_path_factory.mktemp("long")
    rng = random.Random(0)
    for split, size in (("train", 16), ("dev", 8), ("test", 8)):
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for row in range(size):
                words = ["".join(rng.choices(LETTERS, k=rng.randint(3, 7)))
                         for _ in range(rng.randint(25, 50))]
                writer.writerow([" ".join(words), row % 2])
    return str(folder)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_usable_positions_are_what_each_family_takes(family):
    model = make_tiny_model(family)
    limit = usable_positions(model.config)
    ids = torch.randint(FIRST_WORD_ID, VOCAB, (1, limit + 1))
    with torch.no_grad():
        model(input_ids=ids[:, :limit])  # the longest input the model takes runs
        if getattr(model.config, "position_biased_input", True):  # absolute positions
            with pytest.raises((IndexError, RuntimeError)):
                model(input_ids=ids)  # one more token does not
    assert limit == {"roberta": 62, "xlm-roberta": 62, "mpnet": 62}.get(family, 64)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_evaluate_truncates_to_the_models_positions(monkeypatch, capsys, tmp_path, long_task,
                                                    family):
    model = save_char_model(tmp_path / "model", family)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", model, "--task", long_task,
                           "--untrained-head", "--json", str(tmp_path / "eval.json"),
                           "--device", "cpu", "--precision", "fp32")
    assert code == 0, err
    records = json.loads((tmp_path / "eval.json").read_text())
    assert all(r["examples"] == 8 for r in (records if isinstance(records, list) else [records]))


def test_finetune_compress_and_export_of_a_64_position_model(monkeypatch, capsys, tmp_path,
                                                              long_task):
    base = save_char_model(tmp_path / "base")
    common = ("--device", "cpu", "--precision", "fp32")
    code, _, err = run_cli(monkeypatch, capsys, "finetune", base, "--task", long_task,
                           "--max-steps", "2", "--batch-size", "8", "--out",
                           str(tmp_path / "teacher"), *common)
    assert code == 0, err
    teacher = str(tmp_path / "teacher")
    code, _, err = run_cli(monkeypatch, capsys, "compress", teacher, "--task", long_task,
                           "--layers", "2", "--method", "graft", "--samples", "8",
                           "--budget", "6 steps", "--heal", "1", "--no-ood", "--no-speed", "--out",
                           str(tmp_path / "student"), *common)
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "export", teacher, "--out",
                           str(tmp_path / "onnx"))
    assert code == 0, err
    report = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert report["fp32"]["passed"]
    # the exported tokenizer cuts to the model's positions by itself
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    assert exported.model_max_length == 64
    assert token_limit(exported, 512) == 64


def test_an_embedding_model_with_64_positions(monkeypatch, capsys, tmp_path, long_task):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    base = save_char_model(tmp_path / "base", "roberta", head=False)
    transformer = Transformer(base)
    transformer.max_seq_length = 256  # as a careless folder may say
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(tmp_path / "st"))
    texts = tmp_path / "texts.txt"
    with open(Path(long_task) / "train.csv") as handle:
        texts.write_text("\n".join(row["text"] for row in csv.DictReader(handle)) + "\n")
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(tmp_path / "st"),
                           "--objective", "embedding", "--texts", str(texts), "--layers", "2",
                           "--budget", "6 steps", "--heal", "1", "--samples", "8",
                           "--eval-task", long_task, "--out", str(tmp_path / "out"),
                           "--device", "cpu", "--precision", "fp32")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert record["speed"]["mean_length"] <= 62


# 5. a quick look at an embedding model

def test_a_quick_embedding_look_skips_what_it_is_told(monkeypatch, capsys, tmp_path,
                                                      st_folder, texts_file):
    common = ("--objective", "embedding", "--texts", str(texts_file), "--layers", "2",
              "--method", "drop-alternate", "--strategy", "none", "--device", "cpu")
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(st_folder), *common,
                           "--eval-task", "none", "--no-speed", "--out", str(tmp_path / "a"))
    assert code == 0, err
    record = json.loads((tmp_path / "a" / "results.json").read_text())
    assert "neighbours" not in record and "downstream" not in record and "speed" not in record
    assert err.count("evaluating: ") == 1 and "mean cosine" in err
    # --no-ood: the neighbours are found among the task's own dev and test sentences
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(st_folder), *common,
                           "--eval-task", "movie-sentiment", "--no-ood", "--out",
                           str(tmp_path / "b"))
    assert code == 0, err
    record = json.loads((tmp_path / "b" / "results.json").read_text())
    assert record["neighbours"]["sources"] == ["movie-sentiment/dev", "movie-sentiment/test"]
    assert record["settings"]["ood"] is False and "speed" in record
    parts = [line for line in err.splitlines() if line.startswith("evaluating: ")]
    assert [p.split()[1] for p in parts] == ["mean", "loading", "top-10", "frozen-embedding",
                                             "speed"], err



# 5. a classifier-only lever given to a sentence encoder or a decoder LLM

@pytest.mark.parametrize("flag", [("--recalibrate", "16"), ("--collapse-retries", "1"),
                                  ("--lr-inherited", "1e-5"), ("--hidden-weight", "1")])
def test_a_classifier_lever_is_refused_not_ignored_by_other_objectives(
        monkeypatch, capsys, tmp_path, st_folder, texts_file, flag):
    from tiny_lm_run import save_tiny_lm

    lm = save_tiny_lm(tmp_path / "lm")
    for objective, model in (("embedding", str(st_folder)), ("lm", lm)):
        if objective == "lm" and flag[0] == "--hidden-weight":
            continue  # the LM objective distils with it (span-end hidden states)
        out = tmp_path / f"out-{objective}"
        code, _, err = run_cli(monkeypatch, capsys, "compress", model, "--objective",
                               objective, "--texts", str(texts_file), "--layers", "2",
                               *flag, "--out", str(out), "--device", "cpu")
        assert_one_line_error(code, err, "is for --objective task only")
        assert flag[0] in err and f"not yet for --objective {objective}" in err
        assert not out.exists()
