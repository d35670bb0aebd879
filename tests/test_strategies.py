"""`compress`: every strategy yields a stock-loadable student of the asked depth, fairly."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task
from transformers import AutoModelForSequenceClassification, TrainerCallback

from layergraft.data.encoding import encode
from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.models import load_classifier
from layergraft.objectives.task import context as strategies
from layergraft.objectives.task import run as compress_module
from layergraft.objectives.task.evaluation import predict
from layergraft.pipeline.compress import compress
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.manifest import Manifest
from layergraft.training.budget import Budget, next_share, split_steps
from layergraft.training.distill import DistillConfig
from layergraft.training.train import TrainConfig

TRAINING = TrainConfig(output_dir="", batch_size=16, learning_rate=1e-3, progress=False,
                       max_length=24, eval_batch_size=32)
ANALYSIS = AnalysisSettings(samples=32, batch_size=16, max_length=24, progress=False)
BUDGET = "2 epochs"  # 64 train rows / batch 16 = 8 steps
assert one_thread  # an autouse fixture


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    task = write_tiny_task(root / "task")
    return train_tiny_teacher(root, task), task, root / "cache"


def run(inputs, out, **kwargs):
    teacher, task, cache = inputs
    options = dict(layers=2, budget=BUDGET, training=TRAINING, analysis=ANALYSIS,
                   cache_dir=cache, speed=False, progress=False)
    return compress(teacher, task, out_dir=out, **{**options, **kwargs})


@pytest.mark.parametrize("strategy", ["none", "finetune", "distill"])
def test_each_strategy_saves_a_stock_student_of_the_requested_depth(inputs, tmp_path,
                                                                     strategy):
    result = run(inputs, tmp_path / strategy, strategy=strategy, speed=strategy == "none")
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / strategy)
    assert student.config.num_hidden_layers == 2 == result["student"]["layers"]
    assert Manifest.load(tmp_path / strategy).depths() == result["depths"] == [4, 2]
    assert result["train"]["steps"] == (0 if strategy == "none" else 8)
    if sys.platform == "linux":
        assert result["train"]["peak_rss_bytes"] > 0
    # the saved student is the one that was scored
    model, tokenizer = load_classifier(str(tmp_path / strategy))
    dev = encode(load_task(inputs[1]), tokenizer, TRAINING.max_length)["dev"]
    saved = np.load(tmp_path / strategy / result["predictions"])
    rescored = predict(model, dev, tokenizer, progress=False,
                       precision=result["runtime"]["precision"])  # as compress scored it
    np.testing.assert_allclose(rescored, saved["dev"], atol=1e-5)
    dev_record = result["dev"]
    assert set(dev_record["metrics"]) == {"accuracy", "macro_f1"}
    assert dev_record["retention"]["accuracy"] == pytest.approx(
        dev_record["metrics"]["accuracy"] / dev_record["teacher"]["accuracy"])
    agree = np.mean(saved["dev"].argmax(-1) == saved["teacher_dev"].argmax(-1))
    assert dev_record["agreement"] == pytest.approx(agree)
    assert not (tmp_path / strategy / strategies.CHECKPOINTS).exists()
    if result["speed"] is not None:  # teacher and student timed in the same run
        assert {(r["model"], r["layers"]) for r in result["speed"]["records"]} == {
            ("teacher", 4), ("student", 2)}
        assert set(result["speed"]["throughput_ratio"]) == {"32", "1"}


def test_distillation_moves_the_student_towards_the_teacher(inputs, tmp_path):
    none = run(inputs, tmp_path / "none", strategy="none", method="drop-top", layers=1)
    distilled = run(inputs, tmp_path / "distill", strategy="distill", method="drop-top",
                    layers=1, budget="6 epochs")
    gap = {}
    for name, result in (("none", none), ("distill", distilled)):
        saved = np.load(tmp_path / name / result["predictions"])
        gap[name] = np.abs(saved["dev"] - saved["teacher_dev"]).mean()
    assert gap["distill"] < 0.5 * gap["none"]


def test_progressive_passes_every_depth_within_the_distill_budget(inputs, tmp_path):
    teacher = train_tiny_teacher(tmp_path, inputs[1], num_layers=5)
    cache = inputs[2]
    config = DistillConfig(hidden_weight=1.0)
    one_shot = run((teacher, inputs[1], cache), tmp_path / "distill", distill=config)
    result = run((teacher, inputs[1], cache), tmp_path / "progressive", strategy="progressive",
                 distill=config)
    manifest = Manifest.load(tmp_path / "progressive")
    assert manifest.depths() == result["depths"] == [5, 4, 3, 2]
    assert [s["layers"] for s in result["train"]["stages"]] == [4, 3, 2]
    assert [s["global_step"] for s in result["train"]["stages"]] == [2, 3, 3]
    assert result["train"]["steps"] == one_shot["train"]["steps"] == 8
    assert AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "progressive").config.num_hidden_layers == 2
    assert not (tmp_path / "progressive" / strategies.PROGRESSIVE).exists()


def test_interrupted_progressive_resumes_after_its_last_finished_merge(inputs, tmp_path,
                                                                       monkeypatch):
    calls = []
    train = strategies.train

    def failing_second_stage(model, *args, **kwargs):
        calls.append(model.config.num_hidden_layers)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(model, *args, **kwargs)

    monkeypatch.setattr(strategies, "train", failing_second_stage)
    with pytest.raises(KeyboardInterrupt):
        run(inputs, tmp_path / "run", strategy="progressive")
    assert (tmp_path / "run" / strategies.PROGRESSIVE / "3-layers").is_dir()
    result = run(inputs, tmp_path / "run", strategy="progressive")
    assert calls == [3, 2, 2]  # the 4 -> 3 merge was not trained again
    assert result["depths"] == [4, 3, 2]


class Watch(TrainerCallback):
    """What each progressive stage's optimizer holds: the learning rate of every step, and at
    each stage's first and last step the first moment of the classifier (which every merge
    keeps) and the names of the parameters without state."""

    def __init__(self, stop_first_stage_after: int | None = None) -> None:
        self.lrs, self.starts, self.ends = [], [], []
        self.stop, self.stages = stop_first_stage_after, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.stages += 1

    def on_step_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        if state.global_step == 0:
            self.starts.append(self.moments(optimizer, model))

    def on_step_end(self, args, state, control, **kwargs):
        if self.stages == 1 and state.global_step == self.stop:
            control.should_training_stop = True  # as early stopping would

    def on_train_end(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.ends.append(self.moments(optimizer, model))

    @staticmethod
    def moments(optimizer, model):
        parameters = dict(model.named_parameters())
        moment = optimizer.state[parameters["classifier.weight"]].get("exp_avg")
        fresh = {name for name, p in parameters.items() if p not in optimizer.state}
        return None if moment is None else moment.clone(), fresh


def watching(monkeypatch, watch: Watch) -> Watch:
    train = strategies.train
    monkeypatch.setattr(strategies, "train", lambda *args, callbacks=(), **kwargs: train(
        *args, callbacks=[*callbacks, watch], **kwargs))
    return watch


def one_curve(steps: range, total: int = 8, warmup: int = 1) -> list[float]:
    """transformers' linear warm-up and decay at the training's peak learning rate."""
    return [TRAINING.learning_rate * (s / warmup if s < warmup else (total - s) / (total - warmup))
            for s in steps]


def test_one_progressive_schedule_is_one_curve_and_one_optimizer(inputs, tmp_path,
                                                                 monkeypatch):
    per_stage = watching(monkeypatch, Watch())
    plain = run(inputs, tmp_path / "per-stage", strategy="progressive")
    one = watching(monkeypatch, Watch())
    result = run(inputs, tmp_path / "one", strategy="progressive", progressive_schedule="one")
    # 8 steps, 1 of warm-up: once at the start, then down to zero at the very end only
    assert one.lrs == pytest.approx(one_curve(range(8)))
    assert [s["global_step"] for s in result["train"]["stages"]] == [4, 4]
    assert result["train"]["steps"] == plain["train"]["steps"] == 8
    assert per_stage.lrs[4] == 0 < per_stage.lrs[3]  # per-stage warms up again
    # the classifier's moments go on into stage 2; only the grafted layer starts fresh
    moment, fresh = one.starts[1]
    assert torch.equal(moment, one.ends[0][0]) and moment.abs().sum() > 0
    assert len({name.split(".")[3] for name in fresh}) == 1
    assert all(name.startswith("bert.encoder.layer.") for name in fresh)
    assert per_stage.starts[1][0] is None  # per-stage: a fresh optimizer
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "one")
    assert student.config.num_hidden_layers == 2 and result["depths"] == [4, 3, 2]
    assert result["settings"]["progressive_schedule"] == "one"
    assert "progressive_schedule" not in plain["settings"]  # runs from before it stay valid
    # the schedule decides whether a stored run matches
    assert run(inputs, tmp_path / "one", strategy="progressive", dry_run=True)[
        "status"] == "stale"


def test_the_last_stage_of_one_schedule_gets_what_is_left(inputs, tmp_path, monkeypatch):
    watch = watching(monkeypatch, Watch(stop_first_stage_after=1))
    result = run(inputs, tmp_path / "one", strategy="progressive", progressive_schedule="one")
    assert [s["global_step"] for s in result["train"]["stages"]] == [1, 7]
    assert watch.lrs == pytest.approx(one_curve(range(8)))
    assert next_share(8, 0, 3) == 2 and next_share(8, 1, 2) == 3 and next_share(8, 4, 1) == 4
    for total, parts in ((8, 3), (1001, 6), (7, 7)):
        shares = []  # stages that take their whole share get split_steps' shares
        for left in range(parts, 0, -1):
            shares.append(next_share(total, sum(shares), left))
        assert shares == split_steps(total, parts)


def test_interrupted_one_schedule_resumes_on_the_same_curve(inputs, tmp_path, monkeypatch):
    first = Watch()
    train = strategies.train

    def failing_second_stage(*args, callbacks=(), **kwargs):
        if first.stages == 1:
            raise KeyboardInterrupt
        return train(*args, callbacks=[*callbacks, first], **kwargs)

    monkeypatch.setattr(strategies, "train", failing_second_stage)
    with pytest.raises(KeyboardInterrupt):
        run(inputs, tmp_path / "run", strategy="progressive", progressive_schedule="one")
    monkeypatch.undo()
    resumed = watching(monkeypatch, Watch())
    result = run(inputs, tmp_path / "run", strategy="progressive", progressive_schedule="one")
    assert resumed.stages == 1 and resumed.lrs == pytest.approx(one_curve(range(4, 8)))
    assert torch.equal(resumed.starts[0][0], first.ends[0][0])
    assert sum(s["global_step"] for s in result["train"]["stages"]) == 8


def test_a_progressive_schedule_without_stages_is_refused(inputs, tmp_path):
    with pytest.raises(LayergraftError, match="--strategy progressive"):
        run(inputs, tmp_path / "a", strategy="distill", progressive_schedule="one")
    with pytest.raises(LayergraftError, match="unknown progressive schedule"):
        run(inputs, tmp_path / "b", strategy="progressive", progressive_schedule="once")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_finished_run_is_returned_and_other_runs_are_not_overwritten(inputs, tmp_path,
                                                                     monkeypatch):
    first = run(inputs, tmp_path / "run", strategy="none")
    monkeypatch.setattr(compress_module._Run, "execute", lambda *a: pytest.fail("recomputed"))
    assert run(inputs, tmp_path / "run", strategy="none") == first
    with pytest.raises(LayergraftError, match="--overwrite"):
        run(inputs, tmp_path / "run", strategy="none", method="drop-top")
    (tmp_path / "model").mkdir()
    AutoModelForSequenceClassification.from_pretrained(inputs[0]).save_pretrained(
        tmp_path / "model")
    with pytest.raises(LayergraftError, match="--overwrite"):
        run(inputs, tmp_path / "model", strategy="none")
    with pytest.raises(LayergraftError, match="--overwrite"):
        run(inputs, tmp_path / "model", strategy="none", replace_other_runs=True)


def test_a_suite_may_replace_its_own_run_of_other_settings(inputs, tmp_path):
    run(inputs, tmp_path / "run", strategy="none")
    replaced = run(inputs, tmp_path / "run", strategy="none", method="drop-top",
                   replace_other_runs=True)
    assert replaced["method"] == "drop-top"
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == replaced


@pytest.mark.parametrize("method", ["drop-bottom", "drop-alternate", "drop-similar",
                                    "average", "random"])
def test_every_method_goes_through_the_same_path(inputs, tmp_path, method):
    result = run(inputs, tmp_path / method, strategy="none", method=method)
    assert result["student"]["layers"] == 2
    assert json.loads((tmp_path / method / "graft_manifest.json").read_text())["steps"][0][
        "method"] == method


def test_budget_is_one_definition_in_steps():
    assert Budget.parse("3 epochs").steps(train_examples=100, global_batch=32) == 12
    assert Budget.parse("1.5epoch").steps(100, 32) == 6
    assert Budget.parse("500 steps").steps(100, 32) == 500
    assert str(Budget.parse("2 epochs")) == "2 epochs"
    assert split_steps(8, 3) == [2, 3, 3] and sum(split_steps(1001, 6)) == 1001
    for bad in ("three epochs", "0 steps", "1.5 steps"):
        with pytest.raises(LayergraftError):
            Budget.parse(bad)
    with pytest.raises(LayergraftError):
        split_steps(2, 3)


def test_bad_strategy_or_depth_is_a_user_error(inputs, tmp_path):
    with pytest.raises(LayergraftError, match="strategy"):
        run(inputs, tmp_path / "a", strategy="distil")
    with pytest.raises(LayergraftError, match="--layers"):
        run(inputs, tmp_path / "b", strategy="none", layers=4)


def test_distillation_weights_pass_through_to_the_loss(inputs, tmp_path, monkeypatch):
    seen = []
    make = strategies.make_distill_loss
    monkeypatch.setattr(strategies, "make_distill_loss",
                        lambda teacher, config, layer_map, attention=None: seen.append(
                            (config, list(layer_map))) or make(teacher, config,
                                                               layer_map=layer_map,
                                                               attention=attention))
    config = DistillConfig(temperature=4.0, hidden_weight=0.5, task_weight=0.2)
    run(inputs, tmp_path / "run", strategy="distill", method="drop-alternate", distill=config,
        budget="2 steps")
    assert seen == [(config, [2, 4])]


@pytest.mark.slow
def test_distillation_improves_a_real_minilm_graft_over_surgery_alone(tmp_path):
    from layergraft.models import default_model_path
    from layergraft.pipeline.finetune import finetune

    task = load_task("movie-sentiment")
    folder = tmp_path / "movies"
    folder.mkdir()
    for split, size in (("train", 256), ("dev", 192)):
        task.splits[split].shuffle(seed=0).select(range(size)).to_csv(folder / f"{split}.csv")
    config = TrainConfig(output_dir="", max_steps=32, eval_every=32, batch_size=16,
                         learning_rate=2e-4, max_length=64, progress=False)
    finetune(default_model_path(), load_task(str(folder)), str(tmp_path / "teacher"), config)
    options = dict(layers=3, budget="3 epochs", speed=False, progress=False,
                   training=replace(config, max_steps=None, eval_every="epoch"),
                   analysis=AnalysisSettings(samples=128, max_length=64, progress=False),
                   cache_dir=tmp_path / "cache")
    teacher = str(tmp_path / "teacher")
    none = compress(teacher, str(folder), out_dir=tmp_path / "none", strategy="none", **options)
    distilled = compress(teacher, str(folder), out_dir=tmp_path / "distill", **options)
    assert distilled["dev"]["teacher"]["accuracy"] > 0.65
    assert distilled["dev"]["agreement"] > none["dev"]["agreement"] + 0.05
    assert distilled["dev"]["metrics"]["accuracy"] > none["dev"]["metrics"]["accuracy"]


def test_out_of_domain_sets_are_scored_against_the_teacher(inputs, tmp_path, monkeypatch):
    from layergraft.data.tasks import Task

    shifted = load_task(write_tiny_task(tmp_path / "shifted", seed=7))
    monkeypatch.setattr(Task, "ood", lambda self: {"shifted": shifted})
    result = run(inputs, tmp_path / "ood", strategy="none")
    saved = np.load(tmp_path / "ood" / result["predictions"])
    labels = np.asarray(shifted.splits["test"]["label"])
    np.testing.assert_array_equal(saved["labels_shifted"], labels)
    record = result["shifted"]
    assert record["examples"] == len(labels)
    assert record["metrics"]["accuracy"] == pytest.approx(
        np.mean(saved["shifted"].argmax(-1) == labels))
    assert record["teacher"]["accuracy"] == pytest.approx(
        np.mean(saved["teacher_shifted"].argmax(-1) == labels))
    assert set(result) >= {"dev", "test", "shifted"}
    quick = run(inputs, tmp_path / "quick", strategy="none", ood=False)
    assert "shifted" not in quick and quick["settings"]["ood"] is False
    assert "ood" not in result["settings"]  # runs from before the option stay valid


def test_length_grouped_training_is_a_setting_only_when_on(inputs, tmp_path):
    from layergraft.training.train import student_training

    plain = run(inputs, tmp_path / "plain", strategy="finetune", training=None)
    assert "group_by_length" not in plain["settings"]["training"]
    grouped = run(inputs, tmp_path / "grouped", strategy="finetune",
                  training=student_training(group_by_length=True))
    assert grouped["settings"]["training"]["group_by_length"] is True
    assert grouped["train"]["steps"] == plain["train"]["steps"]


def test_refit_after_surgery_is_part_of_the_run_and_of_its_manifest(inputs, tmp_path):
    plain = run(inputs, tmp_path / "plain", strategy="none", method="drop-alternate")
    refit = run(inputs, tmp_path / "refit", strategy="none", method="drop-alternate",
                refit_samples=16)
    assert "refit_samples" not in plain["settings"]
    assert refit["settings"]["refit_samples"] == 16
    step = Manifest.load(tmp_path / "refit").steps[-1]
    assert step.refit["samples"] == 16
    assert all(r["mse_after"] < r["mse_before"] for r in step.refit["layers"])
    weights = [AutoModelForSequenceClassification.from_pretrained(tmp_path / name).state_dict()
               for name in ("plain", "refit")]
    changed = {k for k in weights[0] if not np.array_equal(weights[0][k], weights[1][k])}
    assert changed and all(".output.dense." in k and ".attention." not in k for k in changed)
