"""Local healing: each new layer learns its span from cached teacher states, at a known cost."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_FAMILIES, make_tiny_batches, make_tiny_model
from tiny_decoders import DECODER_FAMILIES, LAYERS, tiny_decoder, token_ids
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task

from layergraft.data.encoding import encode
from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.models import load_classifier
from layergraft.objectives.task import healing
from layergraft.pipeline.compress import compress
from layergraft.runtime import Runtime
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.arch import encoder_layers, ffn_width, num_heads
from layergraft.surgery.graft import graft_model
from layergraft.surgery.methods import GraftOptions
from layergraft.surgery.plan import Plan
from layergraft.training.distill import LiveTeacher
from layergraft.training.heal import (
    HealConfig,
    heal,
    heal_charge,
    heal_spans,
    healable,
    layer_errors,
)
from layergraft.training.train import TrainConfig

assert one_thread  # an autouse fixture
FP32 = Runtime(torch.device("cpu"), "fp32")
TRAINING = TrainConfig(output_dir="", batch_size=16, learning_rate=1e-3, progress=False,
                       max_length=24, eval_batch_size=32)
ANALYSIS = AnalysisSettings(samples=32, batch_size=16, max_length=24, progress=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("heal")
    task = write_tiny_task(root / "task")
    return train_tiny_teacher(root, task), task, root / "cache"


def test_spans_and_what_heals():
    # 6 -> 3 by pairs: layer k reads the end of pair k-1 and stands for the end of pair k
    assert heal_spans([2, 4, 6]) == [(0, 2), (2, 4), (4, 6)]
    assert healable([2, 4, 6]) == [0, 1, 2]
    # drop-top 6 -> 3 keeps 0, 1 and 2, the last standing for layers 2-5: only it heals
    assert heal_spans([1, 2, 6]) == [(0, 1), (1, 2), (2, 6)] and healable([1, 2, 6]) == [2]


def test_the_charge_rule_in_distillation_steps():
    config = HealConfig(steps=30, batch_size=32)
    # every layer heals, same batch as training: a heal step costs one distillation step
    assert heal_charge(config, 3, 3, 32) == 30
    # half the batch, one of three layers run: (1/2) * (1 / 3) of a step
    assert heal_charge(HealConfig(steps=30, batch_size=16), 3, 1, 32) == 5
    assert heal_charge(HealConfig(steps=10, batch_size=32), 3, 1, 32) == 4  # ceil(3.33)
    assert heal_charge(HealConfig(steps=0), 3, 3, 32) == 0 and heal_charge(config, 3, 0, 32) == 0


def test_healing_lowers_every_new_layers_span_error_and_leaves_copies_alone(inputs):
    teacher_path, task_dir, cache = inputs
    teacher, tokenizer = load_classifier(teacher_path)
    train = encode(load_task(task_dir), tokenizer, 24)["train"]
    # keep layer 0 as it is, graft layers 1-3 into one: spans 0->1 (a copy) and 1->4
    generator = torch.Generator().manual_seed(0)
    student, manifest = graft_model(
        teacher, plan=Plan.from_spans(4, "1-3"), method="graft",
        options=GraftOptions(max_sources=0),
        head_scores=torch.rand(4, num_heads(teacher.config), generator=generator),
        neuron_scores=torch.rand(4, ffn_width(teacher), generator=generator))
    copy_before = {k: v.clone() for k, v in encoder_layers(student)[0].state_dict().items()}
    record = heal(student, teacher, train, tokenizer, manifest.span_ends(),
                  HealConfig(steps=40, learning_rate=3e-3, batch_size=16), runtime=FP32,
                  cache_dir=cache, seed=0)
    assert record["layers"] == [1] and record["steps"] == 40 and record["seconds"] > 0
    assert record["mse_after"][1] < 0.7 * record["mse_before"][1]
    assert record["mse_before"][0] == pytest.approx(0.0, abs=1e-5)  # a copy is exact already
    for name, tensor in encoder_layers(student)[0].state_dict().items():
        assert torch.equal(tensor, copy_before[name]), name


def run(inputs, out, **kwargs):
    teacher, task, cache = inputs
    options = dict(layers=2, budget="2 epochs", training=TRAINING, analysis=ANALYSIS,
                   cache_dir=cache, speed=False, progress=False, precision="fp32")
    return compress(teacher, task, out_dir=out, **{**options, **kwargs})


def test_heal_strategy_is_retraining_free_and_records_its_cost(inputs, tmp_path):
    none = run(inputs, tmp_path / "none", strategy="none")
    healed = run(inputs, tmp_path / "heal", strategy="heal",
                 heal=HealConfig(steps=24, learning_rate=3e-3, batch_size=16))
    assert healed["settings"]["heal"]["steps"] == 24 and "heal" not in none["settings"]
    assert healed["train"]["steps"] == 0 and healed["heal"]["steps"] == 24
    assert healed["heal"]["charge"] == 24 * 16 // 16  # all layers heal, batch 16 = training's
    assert all(a < b for a, b in zip(healed["heal"]["mse_after"], healed["heal"]["mse_before"],
                                     strict=True))
    assert healed["dev"]["agreement"] >= none["dev"]["agreement"]


def test_healing_is_charged_against_the_distillation_budget(inputs, tmp_path):
    record = run(inputs, tmp_path / "distill", strategy="distill",
                 heal=HealConfig(steps=4, batch_size=16))
    assert record["heal"]["charge"] == 4
    assert record["train"]["budget_steps"] == 8 and record["train"]["steps"] == 8 - 4
    with pytest.raises(LayergraftError, match="healing costs 8 of the budget's 8 steps"):
        run(inputs, tmp_path / "too-much", strategy="distill",
            heal=HealConfig(steps=8, batch_size=16))


def test_an_interrupted_run_does_not_heal_again(inputs, tmp_path, monkeypatch):
    calls = []
    real_heal = healing.heal
    monkeypatch.setattr(healing, "heal", lambda *a, **k: calls.append(1) or real_heal(*a, **k))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    from layergraft.objectives.task.context import RunContext

    monkeypatch.setattr(RunContext, "train_stage", crash)
    options = dict(strategy="distill", heal=HealConfig(steps=4, batch_size=16))
    with pytest.raises(KeyboardInterrupt):
        run(inputs, tmp_path / "run", **options)
    assert calls == [1] and (tmp_path / "run" / "healed" / "heal.json").is_file()
    monkeypatch.undo()
    monkeypatch.setattr(healing, "heal", lambda *a, **k: calls.append(1) or real_heal(*a, **k))
    record = run(inputs, tmp_path / "run", **options)
    assert calls == [1] and record["heal"]["steps"] == 4
    assert not (tmp_path / "run" / "healed").exists()  # work folders go once the run is saved


def test_requests_healing_cannot_serve_are_refused_in_one_line(inputs, tmp_path):
    with pytest.raises(LayergraftError, match="strategy 'heal' needs healing steps"):
        run(inputs, tmp_path / "a", strategy="heal")
    with pytest.raises(LayergraftError, match="healing is for one-shot surgery"):
        run(inputs, tmp_path / "b", strategy="progressive", heal=HealConfig(steps=2))
    with pytest.raises(LayergraftError, match="--heal needs steps >= 0"):
        HealConfig(steps=-1)


def test_the_cli_heals_at_the_library_defaults():
    from layergraft.cli.options import HEAL_FLAGS

    defaults = {p.name: p.default for p in HEAL_FLAGS}
    assert defaults["heal_lr"] == HealConfig.learning_rate
    assert defaults["heal_batch_size"] == HealConfig.batch_size


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_each_layer_run_alone_on_teacher_states_reproduces_the_full_forward(family):
    # healing runs the healed layers alone, with the arguments the encoder would pass them
    # (mask, position terms): a model judged against itself must be exact at every layer
    model = make_tiny_model(family, num_layers=3)
    batches = [{**b, "example_id": torch.arange(len(b["input_ids"]))}
               for b in make_tiny_batches(model)]
    spans = [(k, k + 1) for k in range(3)]
    errors = layer_errors(model, LiveTeacher(model), batches, spans)
    assert errors == pytest.approx([0.0] * 3, abs=1e-10)
    shifted = layer_errors(model, LiveTeacher(model), batches, [(k, k + 2) for k in range(2)])
    assert min(shifted) > 1e-6  # and not exact where the target is a different layer


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_each_decoder_layer_alone_gets_its_own_attention_type(family):
    # Qwen2's layers 2-3 (and all of Mistral's) attend within a window of 4 tokens: run alone
    # on 12-token windows, each layer must get its own mask, not the first layer's
    model = tiny_decoder(family)
    ids = token_ids(rows=2, length=12, seed=3)
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "example_id": torch.arange(2)}]
    spans = [(k, k + 1) for k in range(LAYERS - 1)]  # the last ends after the final norm
    errors = layer_errors(model, LiveTeacher(model), batches, spans, top=LAYERS)
    assert errors == pytest.approx([0.0] * (LAYERS - 1), abs=1e-10)
