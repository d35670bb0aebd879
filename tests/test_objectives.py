"""One contract over every registered objective (peft-style): a tiny teacher is compressed,
saved, loaded with its ecosystem's own loader, evaluated, and resumed (a second call returns
the finished run without training). A new objective adds one `Case` below."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task  # noqa: F401

from layergraft.errors import LayergraftError
from layergraft.objectives.base import OBJECTIVES, Objective, get_objective
from layergraft.surgery.manifest import MANIFEST_NAME
from layergraft.training.train import TrainConfig


@dataclass
class Case:
    """How the contract builds a tiny teacher and its data for one objective."""

    teacher: callable  # (folder) -> teacher path
    data: callable  # (folder) -> (data, compress options that name it)
    options: dict
    check_loaded: callable  # (model loaded by the ecosystem's loader) -> None


def _task_teacher(folder: Path) -> str:
    return train_tiny_teacher(folder / "teacher", write_tiny_task(folder / "data"), steps=24)


def _task_data(folder: Path):
    return write_tiny_task(folder / "data"), {}


def _check_classifier(loaded) -> None:
    from transformers import AutoModelForSequenceClassification

    model, _ = loaded
    assert model.config.num_hidden_layers == 2
    assert isinstance(model, type(AutoModelForSequenceClassification.from_config(model.config)))


def _embedding_teacher(folder: Path) -> str:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tiny_task import save_tiny_teacher

    transformer = Transformer(save_tiny_teacher(folder / "base", head=False))
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder / "st"))
    return str(folder / "st")


def _embedding_data(folder: Path):
    task = write_tiny_task(folder / "data", sizes=(48, 16, 16))
    return task, {"eval_tasks": [task]}


def _check_encoder(model) -> None:
    assert model.encode(["good film"]).shape == (1, 32)


def _lm_teacher(folder: Path) -> str:
    from tiny_lm_run import save_tiny_lm

    return save_tiny_lm(folder / "lm")


def _lm_data(folder: Path):
    from tiny_lm_run import write_tiny_text

    return None, {"texts": write_tiny_text(folder / "text.txt"), "ood": False,
                  "eval_windows": 2, "calibration_windows": 4}


def _check_causal_lm(model) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(model.name_or_path)
    assert student.config.num_hidden_layers == 2
    out = student.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


CASES = {
    "task": Case(_task_teacher, _task_data, {"strategy": "distill", "training": TrainConfig(
        output_dir="", learning_rate=1e-3, batch_size=16, max_length=24, progress=False,
        early_stopping_patience=None)}, _check_classifier),
    "embedding": Case(_embedding_teacher, _embedding_data, {"strategy": "distill"},
                      _check_encoder),
    "lm": Case(_lm_teacher, _lm_data, {"strategy": "distill", "training": TrainConfig(
        output_dir="", learning_rate=1e-3, batch_size=4, max_length=16, progress=False)},
        _check_causal_lm),
}


def test_every_registered_objective_has_a_case_and_unknown_names_are_refused():
    assert set(CASES) == set(OBJECTIVES)
    with pytest.raises(LayergraftError, match="unknown objective 'nope': choose task or "):
        get_objective("nope")


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_contract(name, tmp_path, one_thread, monkeypatch):  # noqa: F811
    from layergraft.pipeline.compress import compress

    case, objective = CASES[name], get_objective(name)
    assert isinstance(objective, Objective) and objective.name == name
    assert objective.speed_unit.endswith("/s")
    teacher = case.teacher(tmp_path)
    data, named = case.data(tmp_path)
    options = dict(layers=2, out_dir=tmp_path / "run", objective=name, budget="4 steps",
                   device="cpu", precision="fp32", cache_dir=tmp_path / "cache",
                   progress=False, **case.options, **named)
    planned = compress(teacher, data, **options, dry_run=True)
    assert planned["status"] == "to do" and planned["settings"]
    record = compress(teacher, data, **options)
    assert record["settings"] == planned["settings"]
    assert objective.probe_score(record) is not None and objective.headline(record)
    assert record["speed"] and record["seconds"] >= 0
    saved = tmp_path / "run"
    assert json.loads((saved / "results.json").read_text()) == record
    assert (saved / MANIFEST_NAME).is_file()

    case.check_loaded(objective.load(str(saved)))  # the ecosystem's own loader opens it
    evaluated = objective.evaluate(str(saved), data, device="cpu", precision="fp32",
                                   teacher=teacher, eval_tasks=[data])
    assert evaluated and all(isinstance(r, dict) for r in evaluated)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was executed again")

    run_class = type(objective.run(teacher, data, layers=2, out=saved, dry_run=True,
                                   **{k: v for k, v in options.items()
                                      if k not in ("layers", "out_dir", "objective")}))
    monkeypatch.setattr(run_class, "execute", no_training)
    assert compress(teacher, data, **options) == record
    assert compress(teacher, data, **options, dry_run=True)["status"] == "done"
