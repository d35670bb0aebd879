"""Training through the Trainer: it learns, resumes exactly, honours loss_fn, stops early, and
makes teachers on disk. Tiny random models on the toy task, plus one slow real-MiniLM run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_model
from safetensors.torch import load_file
from tiny_task import one_thread, save_tiny_teacher, write_tiny_task
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
    set_seed,
)

from layergraft.data.encoding import encode
from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.objectives.task.evaluation import evaluate_model
from layergraft.pipeline.finetune import RESULTS_NAME, finetune
from layergraft.training.train import TrainConfig, train

assert one_thread  # an autouse fixture


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny random 'pretrained' BERT folder with its tokenizer."""
    return save_tiny_teacher(tmp_path_factory.mktemp("base"), num_layers=2)


@pytest.fixture(scope="module")
def tokenizer(base):
    return AutoTokenizer.from_pretrained(base)


def make_toy_task(tmp_path: Path, n_train: int, n_dev: int):
    return load_task(write_tiny_task(tmp_path / "task", sizes=(n_train, n_dev, 8)))


def tiny(num_labels: int = 2):
    return make_tiny_model("bert", num_labels=num_labels, num_layers=2, seed=0).train()


def quick(tmp_path: Path, **overrides) -> TrainConfig:
    settings = dict(output_dir=str(tmp_path / "run"), batch_size=8, learning_rate=1e-3,
                    epochs=3, eval_every=6, progress=False, early_stopping_patience=None,
                    logging_steps=3)
    return TrainConfig(**{**settings, **overrides})


def test_train_learns_and_returns_the_best_checkpoint(tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=128, n_dev=64)
    model = tiny()
    before = evaluate_model(model, tokenizer, task, progress=False)["metrics"]["accuracy"]
    config = quick(tmp_path, batch_size=16, learning_rate=5e-3, epochs=6, eval_every=8)
    result = train(model, tokenizer, task, config)
    assert result.global_step == 48 and result.metrics["accuracy"] > 0.9 > before + 0.2
    evals = {h["step"]: h["eval_accuracy"] for h in result.log_history if "eval_accuracy" in h}
    best_step = int(Path(result.best_checkpoint).name.split("-")[1])
    assert evals[best_step] == max(evals.values()) == result.metrics["accuracy"]
    again = evaluate_model(result.model, tokenizer, task, progress=False)["metrics"]
    assert again["accuracy"] == result.metrics["accuracy"]  # the weights are the best ones


class StopAfterSave(TrainerCallback):
    """Simulates an interruption right after the checkpoint at ``step`` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class SlowSteps(TrainerCallback):
    """Makes every training step take at least ``seconds`` longer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


def test_resume_after_interruption_matches_an_uninterrupted_run(tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=48, n_dev=16)
    whole_config, cut_config = quick(tmp_path / "whole"), quick(tmp_path / "cut")
    whole = train(tiny(), tokenizer, task, whole_config)
    stopped = train(tiny(), tokenizer, task, cut_config,
                    callbacks=[StopAfterSave(6), SlowSteps(0.1)])
    assert stopped.global_step == 6
    started = time.perf_counter()
    resumed = train(tiny(), tokenizer, task, cut_config)
    resumed_wall = time.perf_counter() - started
    assert resumed.global_step == whole.global_step == 18

    # the resumed run's training time includes the time that led to its checkpoint
    state = json.loads((Path(cut_config.output_dir) / "checkpoint-6" / "trainer_state.json")
                       .read_text())
    before_cut = state["stateful_callbacks"]["TrainingClock"]["attributes"]["seconds"]
    assert before_cut >= 6 * 0.1
    assert before_cut < resumed.train_seconds < before_cut + resumed_wall

    def weights(config: TrainConfig, step: int) -> dict[str, torch.Tensor]:
        return load_file(Path(config.output_dir) / f"checkpoint-{step}" / "model.safetensors")

    final, start = weights(whole_config, 18), weights(cut_config, 6)
    assert all(torch.equal(final[k], v) for k, v in weights(cut_config, 18).items())
    assert not all(torch.equal(final[k], v) for k, v in start.items())  # trained after resume

    def evals(result):
        return [(h["step"], h["eval_accuracy"], h["eval_loss"])
                for h in result.log_history if "eval_loss" in h]

    assert evals(resumed) == evals(whole) and resumed.metrics == whole.metrics


def test_loss_fn_is_what_training_minimises_and_example_ids_stay_out_of_forward(
        tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=40, n_dev=8)
    model = tiny()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    forward_kwargs: list[set[str]] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: forward_kwargs.append(set(kwargs)), with_kwargs=True)
    seen: list[int] = []

    def zero_loss(model, batch):
        assert batch["labels"].shape == batch["example_id"].shape
        seen.extend(batch["example_id"].tolist())
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "example_id")}
        return model(**inputs).logits.sum() * 0.0

    config = quick(tmp_path, epochs=1, weight_decay=0.0, eval_every="epoch")
    result = train(model, tokenizer, task, config, loss_fn=zero_loss)
    assert sorted(seen) == list(range(40))  # one epoch: every training row exactly once
    assert all(torch.equal(initial[k], v) for k, v in result.model.state_dict().items())
    assert forward_kwargs and all("example_id" not in kw for kw in forward_kwargs)


def test_early_stopping_on_a_flat_dev_metric(tokenizer, tmp_path):
    config = quick(tmp_path, learning_rate=0.0, early_stopping_patience=1, eval_every=3,
                   epochs=10)
    result = train(tiny(), tokenizer, make_toy_task(tmp_path, n_train=48, n_dev=8), config)
    assert result.global_step == 6  # evals at 3 (best) and 6 (no better: stop)


def test_train_refuses_unfit_inputs(tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=8, n_dev=4)
    with pytest.raises(LayergraftError, match="regression head"):
        train(tiny(num_labels=1), tokenizer, task, quick(tmp_path))
    with pytest.raises(TypeError, match="spec"):
        train(tiny(), tokenizer, encode(task, tokenizer), quick(tmp_path))
    with pytest.raises(LayergraftError, match="eval_every"):
        train(tiny(), tokenizer, task, quick(tmp_path, eval_every="sometimes"))
    task.splits["dev"] = task.splits["dev"].remove_columns("label")
    with pytest.raises(LayergraftError, match="labeled dev split"):
        train(tiny(), tokenizer, task, quick(tmp_path))


def test_finetune_writes_a_teacher_and_refuses_to_overwrite(base, tokenizer, tmp_path):
    task = make_toy_task(tmp_path, n_train=32, n_dev=16)
    out = tmp_path / "teacher"
    config = quick(tmp_path, max_steps=4, eval_every=2)
    record = finetune(base, task, str(out), config)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", RESULTS_NAME, "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]  # checkpoints are gone
    saved = json.loads((out / RESULTS_NAME).read_text())
    assert saved == json.loads(json.dumps(record)) and saved["global_step"] == 4
    assert set(saved["test"]) == {"accuracy", "macro_f1"}
    teacher = AutoModelForSequenceClassification.from_pretrained(out)
    assert evaluate_model(teacher, tokenizer, task, progress=False)["metrics"] == saved["dev"]
    with pytest.raises(LayergraftError, match="already holds a model"):
        finetune(base, task, str(out), config)


@pytest.mark.slow
def test_finetune_real_minilm_on_a_movie_slice_beats_chance(tmp_path):
    from layergraft.data.tasks import load_task
    from layergraft.models import default_model_path

    task = load_task("movie-sentiment")
    task.splits["train"] = task.splits["train"].shuffle(seed=0).select(range(256))
    task.splits["dev"] = task.splits["dev"].shuffle(seed=0).select(range(128))
    del task.splits["test"]
    labels = np.asarray(task.splits["dev"]["label"])
    majority = max(labels.mean(), 1 - labels.mean())
    set_seed(0)
    config = TrainConfig(output_dir="", max_steps=32, eval_every=32, batch_size=16,
                         learning_rate=2e-4, max_length=64, progress=False)
    record = finetune(default_model_path(), task, str(tmp_path / "teacher"), config)
    assert record["dev"]["accuracy"] > max(0.65, majority + 0.1)
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    assert teacher.config.id2label == {0: "negative", 1: "positive"}
