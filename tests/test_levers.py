"""The 12-layer levers (issue 32): a rate of their own for inherited weights, the collapse
guard, and output-statistics recalibration after surgery, each on tiny real models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import make_tiny_batches, make_tiny_model
from test_strategies import ANALYSIS, TRAINING, inputs
from tiny_task import one_thread

from layergraft.models import load_classifier
from layergraft.pipeline.compress import compress
from layergraft.surgery.graft import graft_model
from layergraft.surgery.recalibrate import recalibrate_norms
from layergraft.training.guard import CollapseGuard, collapse_reason, train_guarded
from layergraft.training.train import (
    ParameterRates,
    TrainConfig,
    TrainResult,
    layer_decay_scales,
)

assert one_thread and inputs  # fixtures: one torch thread; the tiny teacher, task and cache


def run(inputs, out, **kwargs):
    teacher, task, cache = inputs
    options = dict(layers=2, budget="1 epoch", training=TRAINING, analysis=ANALYSIS,
                   cache_dir=cache, speed=False, ood=False, progress=False)
    return compress(teacher, task, out_dir=out, **{**options, **kwargs})


def test_inherited_weights_train_at_their_own_rate_in_their_own_groups():
    model = make_tiny_model("bert", num_layers=2)
    names = frozenset(n for n, _ in model.named_parameters() if ".layer.0." not in n)
    optimizer = torch.optim.AdamW([{"params": list(model.parameters()), "lr": 1e-3}])
    ParameterRates(names, 1e-5).split(optimizer, model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    rates = {by_id[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(rates) == len(by_id)  # every parameter in exactly one group
    assert {rate for name, rate in rates.items() if name in names} == {1e-5}
    assert {rate for name, rate in rates.items() if name not in names} == {1e-3}


def test_inherited_rate_zero_leaves_inherited_weights_untouched_by_training(inputs, tmp_path):
    teacher, _, _ = inputs
    frozen = TrainConfig(**{**TRAINING.__dict__, "inherited_learning_rate": 0.0,
                            "weight_decay": 0.0})
    result = run(inputs, tmp_path / "frozen", layers=3, pairs="2-3", training=frozen)
    assert result["settings"]["training"]["inherited_learning_rate"] == 0.0
    run(inputs, tmp_path / "surgery", layers=3, pairs="2-3", strategy="none")
    run(inputs, tmp_path / "one-rate", layers=3, pairs="2-3")
    layers = {name: load_classifier(str(tmp_path / name))[0].bert.encoder.layer
              for name in ("frozen", "surgery", "one-rate")}
    source = load_classifier(teacher)[0].bert.encoder.layer

    def same(a, b):
        return torch.equal(a.attention.self.query.weight, b.attention.self.query.weight)

    assert same(layers["frozen"][0], source[0])  # intact, at rate 0
    assert not same(layers["one-rate"][0], source[0])  # intact, at the one rate
    assert not same(layers["frozen"][2], layers["surgery"][2])  # the graft still trained


def test_layer_decay_lowers_each_layer_s_rate_towards_the_input():
    from layergraft.errors import LayergraftError
    from layergraft.surgery.arch import encoder_layers

    model = make_tiny_model("bert", num_layers=3)
    scales = layer_decay_scales(model, encoder_layers(model), 0.5)
    by_name = dict(model.named_parameters())
    assert {scales[n] for n in by_name if ".layer.0." in n} == {0.25}
    assert {scales[n] for n in by_name if ".layer.2." in n} == {1.0}  # the top layer
    assert {scales[n] for n in by_name if ".embeddings." in n} == {0.125}
    assert not {n for n in scales if n.startswith("classifier")}  # the head at the full rate
    assert layer_decay_scales(model, encoder_layers(model), None) == {}
    with pytest.raises(LayergraftError, match="takes a factor in"):
        TrainConfig(output_dir="", layer_decay=1.5)  # refused before anything runs
    # with a rate of their own for inherited weights, the factor applies on top of it
    inherited = frozenset(n for n in by_name if ".layer.0." in n)
    optimizer = torch.optim.AdamW([{"params": list(model.parameters()), "lr": 1e-3}])
    ParameterRates(inherited, 1e-5, tuple(scales.items())).split(optimizer, model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    rates = {by_id[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(rates) == len(by_name)
    assert [rates[n] for n in inherited] == pytest.approx([0.25e-5] * len(inherited))
    assert {rates[n] for n in by_name if ".layer.1." in n} == {0.5e-3}
    assert {rates[n] for n in by_name if n.startswith("classifier")} == {1e-3}


def test_a_tiny_layer_decay_leaves_the_bottom_layer_as_it_was(inputs, tmp_path):
    teacher, _, _ = inputs
    decayed = TrainConfig(**{**TRAINING.__dict__, "layer_decay": 1e-9, "weight_decay": 0.0})
    result = run(inputs, tmp_path / "decayed", layers=3, pairs="2-3", training=decayed)
    assert result["settings"]["training"]["layer_decay"] == 1e-9
    layers = load_classifier(str(tmp_path / "decayed"))[0].bert.encoder.layer
    source = load_classifier(teacher)[0].bert.encoder.layer
    bottom, top = (layer.attention.self.query.weight for layer in (layers[0], source[0]))
    assert torch.allclose(bottom, top, atol=1e-7)  # 1e-18 of the rate, 2 layers down
    trained = run(inputs, tmp_path / "plain", layers=3, pairs="2-3")
    plain = load_classifier(str(tmp_path / "plain"))[0].bert.encoder.layer[0]
    assert not torch.allclose(plain.attention.self.query.weight, top, atol=1e-7)
    assert "layer_decay" not in trained["settings"]["training"]


def test_runs_without_the_new_levers_keep_their_old_identity(inputs, tmp_path):
    settings = run(inputs, tmp_path / "s", dry_run=True)["settings"]
    assert "inherited_learning_rate" not in settings["training"]
    assert "layer_decay" not in settings["training"]
    assert not {"guard", "recalibrate_samples"} & set(settings)


def _result(predictions, labels, losses=(0.7, 0.6)) -> TrainResult:
    return TrainResult(model=None, metrics={}, global_step=1, train_seconds=0.0,
                       best_checkpoint=None, log_history=[{"loss": v} for v in losses],
                       dev_predictions=np.asarray(predictions), dev_labels=np.asarray(labels))


def test_the_guard_names_one_class_runaway_loss_and_constant_regression():
    labels = np.array([0, 1] * 50)
    one_class = np.tile([[2.0, -1.0]], (100, 1))
    assert "100.0% of dev predictions are one class" == collapse_reason(
        _result(one_class, labels), regression=False)
    healthy = np.stack([labels, 1 - labels], 1).astype(float)
    assert collapse_reason(_result(healthy, labels), regression=False) is None
    assert "rose" in collapse_reason(_result(healthy, labels, (0.5, 0.9)), regression=False)
    assert "not finite" in collapse_reason(_result(healthy, labels, (0.5, math.nan)), False)
    assert collapse_reason(_result(np.zeros(100), np.linspace(-1, 1, 100)), True) is not None
    # a task whose labels are one class may be predicted as one class
    assert collapse_reason(_result(one_class, np.zeros(100)), regression=False) is None


def test_the_guard_restarts_from_the_starting_weights_at_half_the_rate(tmp_path):
    model = make_tiny_model("bert", num_layers=1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    labels = np.array([0, 1] * 8)
    seen = []

    def stage(m, config):
        seen.append((config.learning_rate, config.output_dir,
                     all(torch.equal(start[k], v) for k, v in m.state_dict().items())))
        with torch.no_grad():
            next(m.parameters()).add_(1.0)  # training moved the weights
        collapsed = len(seen) < 3
        outputs = np.tile([[1.0, 0.0]], (16, 1)) if collapsed else np.eye(2)[labels]
        return _result(outputs, labels)

    config = TrainConfig(output_dir=str(tmp_path), learning_rate=4e-4)
    result, restarts = train_guarded(model, config, CollapseGuard(retries=2), False, stage)
    assert [s[0] for s in seen] == [4e-4, 2e-4, 1e-4]
    assert all(s[2] for s in seen)  # each attempt started from the stage's first weights
    assert len({s[1] for s in seen}) == 3  # each attempt has its own checkpoints
    assert [r["learning_rate"] for r in restarts] == [4e-4, 2e-4]
    assert collapse_reason(result, False) is None


def test_the_guard_gives_up_after_its_retries(tmp_path):
    model = make_tiny_model("bert", num_layers=1)
    labels = np.array([0, 1] * 8)
    calls = []

    def stage(m, config):
        calls.append(config.learning_rate)
        return _result(np.tile([[1.0, 0.0]], (16, 1)), labels)

    _, restarts = train_guarded(model, TrainConfig(output_dir=str(tmp_path)),
                                CollapseGuard(retries=1), False, stage)
    assert len(calls) == 2 and len(restarts) == 1


def test_recalibration_gives_each_repaired_layer_the_teachers_channel_statistics():
    teacher = make_tiny_model("bert", num_layers=4, seed=1).eval()
    student, manifest = graft_model(teacher, layers=2, method="average")
    batches = make_tiny_batches(teacher, n_batches=2, batch=8, seq=12)
    targets = manifest.span_ends()
    report = recalibrate_norms(student, teacher, targets, [0, 1], batches)
    assert [r["layer"] for r in report] == [0, 1]
    for index in (0, 1):
        with torch.no_grad():
            ours = torch.cat([student(**b, output_hidden_states=True).hidden_states[index + 1][
                b["attention_mask"].bool()] for b in batches])
            theirs = torch.cat([teacher(**b, output_hidden_states=True).hidden_states[
                targets[index]][b["attention_mask"].bool()] for b in batches])
        assert torch.allclose(ours.mean(0), theirs.mean(0), atol=1e-4)
        assert torch.allclose(ours.std(0, unbiased=False), theirs.std(0, unbiased=False),
                              atol=1e-4)


def test_compress_recalibrates_the_merged_layers_and_records_it(inputs, tmp_path):
    result = run(inputs, tmp_path / "r", layers=3, pairs="2-3", strategy="none",
                 recalibrate_samples=32)
    assert result["settings"]["recalibrate_samples"] == 32
    from layergraft.surgery.manifest import Manifest
    step = Manifest.load(tmp_path / "r").steps[-1]
    assert [r["layer"] for r in step.recalibrated["layers"]] == [2]  # only the merged one


def test_plans_that_keep_a_bottom_block_intact():
    from layergraft.surgery.plan import Plan, plan_spans

    assert Plan.intact_bottom(12, 6, 4).describe() == "0,1,2,3,4-7,8-11"
    assert Plan.intact_bottom(12, 6, 0) == Plan.uniform(12, 6)
    assert plan_spans("intact:4", 12, 6) == "4-7,8-11"
    assert plan_spans("uniform", 12, 6) is None
    assert plan_spans("0-1,2-11", 12, 2) == "0-1,2-11"
    from layergraft.errors import LayergraftError

    with pytest.raises(LayergraftError, match="keeps 0 to 5 bottom layers"):
        plan_spans("intact:6", 12, 6)
    with pytest.raises(LayergraftError, match="leaves 11 layers, not the 6"):
        plan_spans("0-1", 12, 6)


def executed_runs(monkeypatch) -> list:
    """The method of every compress run that trains from here on (a cached one does not)."""
    from layergraft.objectives.task import run as compress_module

    executed = []
    real = compress_module._Run.execute
    monkeypatch.setattr(compress_module._Run, "execute",
                        lambda self, *args: executed.append(self.method) or real(self, *args))
    return executed


def auto_options(cache) -> dict:
    return dict(layers=2, budget="2 epochs", training=TRAINING, analysis=ANALYSIS,
                cache_dir=cache, speed=False, ood=False, progress=False)


def test_auto_rate_and_plan_are_chosen_on_dev_by_cached_probes(inputs, tmp_path, monkeypatch):
    from layergraft.pipeline import auto

    teacher, task, cache = inputs
    executed = executed_runs(monkeypatch)
    options = auto_options(cache)
    record = auto.compress_auto(teacher, task, out_dir=tmp_path / "a", learning_rate="auto",
                                plan="auto", probe_share=0.25, **options)
    choices = record["choices"]
    assert list(choices["learning_rate"]["dev_retention"]) == [f"lr {r:g}" for r in auto.LR_GRID]
    rate = auto.LR_GRID[choices["learning_rate"]["index"]]
    best = max(choices["learning_rate"]["dev_retention"].values())
    assert choices["learning_rate"]["dev_retention"][f"lr {rate:g}"] == best
    assert list(choices["plan"]["dev_retention"]) == ["uniform", "intact:1"]
    assert record["settings"]["training"]["learning_rate"] == rate
    if choices["plan"]["chosen"] == "intact:1":
        assert record["settings"]["pairs"] == "1-3"
    # the rate probes, the plan probe not already run (uniform at the chosen rate), the run
    assert len(executed) == len(auto.LR_GRID) + 1 + 1
    assert all(s["budget"] == "0.5 epochs" for s in choices.values())
    # another seed of the same teacher, method and depth reuses every probe
    again = auto.compress_auto(teacher, task, out_dir=tmp_path / "b", learning_rate="auto",
                               plan="auto", probe_share=0.25, seed=1, **options)
    assert len(executed) == len(auto.LR_GRID) + 1 + 2
    assert again["choices"]["plan"]["chosen"] == choices["plan"]["chosen"]


def test_auto_method_returns_the_best_on_dev_of_graft_and_the_strongest_drops(
        inputs, tmp_path, monkeypatch):
    from layergraft.objectives.task import TaskObjective
    from layergraft.pipeline import auto

    teacher, task, _ = inputs
    executed = executed_runs(monkeypatch)
    # a cache of its own: the other tests' graft probes would otherwise be reused here
    options = auto_options(tmp_path / "cache")
    record = auto.compress_auto(teacher, task, out_dir=tmp_path / "a", method="auto",
                                probe_share=0.25, **options)
    method = record["choices"]["method"]
    scores = method["dev_retention"]
    assert list(scores) == list(TaskObjective.auto_methods)
    best = max(scores.values())
    assert scores[method["chosen"]] == best  # the best on dev (ties: the earlier)
    assert method["chosen"] == next(name for name, score in scores.items() if score == best)
    assert record["settings"]["method"] == method["chosen"]
    recipe = method["recipes"][method["chosen"]]
    assert record["settings"]["training"]["learning_rate"] == recipe["learning_rate"]
    # each method at its own rate and by its own rule; only graft has a plan to choose
    assert {m: r["plan"] for m, r in method["recipes"].items() if m != "graft"} == {
        "drop-top": "uniform", "drop-alternate": "uniform"}
    probes = len(auto.LR_GRID) * 3 + 1  # three rate sweeps, graft's intact:1 plan
    assert executed[:-1].count("graft") == len(auto.LR_GRID) + 1
    assert len(executed) == probes + 1
    assert method["seconds"] > 0 and method["budget"] == "0.5 epochs"
    line = auto.describe_choices(record)
    assert line.startswith(f"chose method {method['chosen']}, lr ") and "plan" in line


def test_auto_method_without_training_sweeps_no_rate(inputs, tmp_path, monkeypatch):
    from layergraft.pipeline import auto

    teacher, task, _ = inputs
    executed = executed_runs(monkeypatch)
    record = auto.compress_auto(teacher, task, out_dir=tmp_path / "a", method="auto",
                                strategy="none", **auto_options(tmp_path / "cache"))
    assert "learning_rate" not in record["choices"]
    # graft's two plans, drop-top and drop-alternate as they are, then the run itself
    assert executed == ["graft", "graft", "drop-top", "drop-alternate",
                        record["choices"]["method"]["chosen"]]


def test_auto_method_at_a_given_rate_probes_each_method_once_from_the_cli(
        inputs, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from layergraft.cli import app

    teacher, task, cache = inputs
    monkeypatch.setenv("LAYERGRAFT_CACHE", str(cache))
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, [  # no --method: a classifier's default is auto
        "compress", teacher, "--task", task, "--layers", "2", "--lr", "1e-3", "--plan",
        "uniform", "--budget", "8 steps", "--no-ood", "--no-speed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    method = record["choices"]["method"]
    assert set(method["recipes"]) == {"graft", "drop-top", "drop-alternate"}
    assert {r["learning_rate"] for r in method["recipes"].values()} == {1e-3}
    assert record["settings"]["method"] == method["chosen"]
    assert f"chose method {method['chosen']} on dev" in result.output


def test_bad_learning_rate_and_two_plans_are_one_line_errors(inputs, tmp_path):
    from typer.testing import CliRunner

    from layergraft.cli import app

    teacher, task, _ = inputs
    base = ["compress", teacher, "--task", task, "--layers", "2", "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(app, [*base, "--lr", "fast"])
    assert result.exit_code != 0 and "--lr takes a number" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--plan", "intact:1", "--pairs", "1-3"])
    assert result.exit_code != 0 and "pass one" in str(result.exception)
    assert not (tmp_path / "x").exists()
