"""Head and neuron importance: mask hooks, scorers and losses, over tiny random models."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_FAMILIES, make_tiny_batches, make_tiny_model

from layergraft.errors import LayergraftError
from layergraft.scoring import importance
from layergraft.scoring.importance import SCORERS, UnitMasks, score_importance
from layergraft.surgery.arch import encoder_layers, spec_for

FAMILIES = TINY_FAMILIES  # the architecture table and its variants (deberta-v3)
LAYERS, HEADS, FFN = 4, 4, 37


def logits(model, batches):
    with torch.no_grad():
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits
                          for b in batches])


def silence(model, layer, head, neuron):
    """Zero one head's columns of O and one neuron's column of W2, in place."""
    spec = spec_for(model)
    block = encoder_layers(model)[layer]
    out = block.get_submodule(spec.attn_out).weight
    width = out.shape[1] // HEADS
    with torch.no_grad():
        out[:, head * width:(head + 1) * width] = 0
        block.get_submodule(spec.ffn_out).weight[:, neuron] = 0


def pre_hook_count(model):
    return sum(len(module._forward_pre_hooks) for module in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method,loss", [("michel", "task"), ("fisher", "task"),
                                         ("michel", "kl"), ("fisher", "kl"),
                                         ("activation", "task"), ("weight", "task")])
def test_a_unit_with_no_output_scores_lowest_in_its_layer(family, method, loss):
    model = make_tiny_model(family, num_layers=LAYERS)
    silence(model, layer=1, head=2, neuron=5)
    scores = score_importance(model, make_tiny_batches(model), method=method, loss=loss)
    assert scores.head.shape == (LAYERS, HEADS) and scores.neuron.shape == (LAYERS, FFN)
    assert scores.head[1, 2] == 0 and scores.neuron[1, 5] == 0
    assert int(scores.head[1].argmin()) == 2 and int(scores.neuron[1].argmin()) == 5
    assert (scores.head[1, [0, 1, 3]] > 0).all()
    assert (scores.head[[0, 2, 3]] > 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_a_unit_equals_zeroing_its_output_weights(family):
    """The hooks slice the right head and neuron in every family."""
    model = make_tiny_model(family, num_layers=LAYERS)
    batches = make_tiny_batches(model)
    with UnitMasks(model) as hooks:
        hooks.mask = torch.ones(4, LAYERS, HEADS + FFN)
        hooks.mask[:, 2, 1] = 0  # head 1 of layer 2
        hooks.mask[:, 2, HEADS + 7] = 0  # neuron 7 of layer 2
        masked = logits(model, batches)
    silence(model, layer=2, head=1, neuron=7)
    torch.testing.assert_close(masked, logits(model, batches))


@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_masks_and_recording_leave_the_logits_alone(family):
    model = make_tiny_model(family, num_layers=LAYERS)
    batches = make_tiny_batches(model)
    plain = logits(model, batches)
    with UnitMasks(model) as hooks:
        hooks.mask = torch.ones(4, LAYERS, HEADS + FFN)
        hooks.token_mask = batches[0]["attention_mask"].bool()
        hooked = logits(model, batches[:1])
    torch.testing.assert_close(hooked, plain[:4], rtol=0, atol=1e-6)
    assert pre_hook_count(model) == 0


def test_scores_are_deterministic_and_leave_the_model_as_it_was():
    model = make_tiny_model("bert", num_layers=LAYERS, hidden_dropout_prob=0.5,
                            attention_probs_dropout_prob=0.5)
    batches = make_tiny_batches(model)
    before = logits(model.eval(), batches)
    model.train()  # dropout on: scoring must switch it off and restore the mode
    first = score_importance(model, batches, method="fisher")
    second = score_importance(model, batches, method="fisher")
    assert torch.equal(first.head, second.head) and torch.equal(first.neuron, second.neuron)
    assert model.training
    assert pre_hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(logits(model.eval(), batches), before)


def test_hooks_are_removed_when_scoring_fails():
    model = make_tiny_model("bert", num_layers=LAYERS)
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in make_tiny_batches(model)]
    with pytest.raises(LayergraftError, match="gold labels"):
        score_importance(model, batches, loss="task")
    assert pre_hook_count(model) == 0


@pytest.mark.parametrize("method", ["michel", "fisher"])
def test_scores_are_per_example_whatever_the_batching(method, monkeypatch):
    """Batch of 8 regrouped by length in pairs == eight batches of one (labels follow)."""
    model = make_tiny_model("roberta", num_layers=LAYERS, num_labels=3)
    (batch,) = make_tiny_batches(model, n_batches=1, batch=8, seq=12)
    singles = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(8)]
    monkeypatch.setattr(importance, "GROUP_ROWS", 2)
    together = score_importance(model, [batch], method=method)
    apart = score_importance(model, singles, method=method)
    torch.testing.assert_close(together.head, apart.head)
    torch.testing.assert_close(together.neuron, apart.neuron)
    assert together.info["examples"] == apart.info["examples"] == 8
    assert together.info["tokens"] == apart.info["tokens"] == int(batch["attention_mask"].sum())


def test_kl_fisher_is_the_expected_fisher_under_the_models_own_predictions():
    """Σ_y p(y) · (gold-label Fisher with label y), example by example."""
    model = make_tiny_model("distilbert", num_layers=2, num_labels=3)
    (batch,) = make_tiny_batches(model, n_batches=1, batch=3)
    probs = logits(model, [batch]).softmax(-1)
    expected = 0
    for i in range(3):
        for label in range(3):
            single = {**{k: v[i:i + 1] for k, v in batch.items()}, "labels": torch.tensor([label])}
            expected = expected + probs[i, label] * score_importance(
                model, [single], method="fisher").head
    kl = score_importance(model, [batch], method="fisher", loss="kl")
    torch.testing.assert_close(kl.head, expected.double())


def test_kl_fisher_for_regression_is_the_squared_output_sensitivity():
    """With labels f - 1/2, the squared error's gradient is exactly ∂f/∂ξ."""
    model = make_tiny_model("bert", num_layers=2, num_labels=1)
    batches = make_tiny_batches(model)
    shifted = [{**b, "labels": logits(model, [b]).squeeze(-1) - 0.5} for b in batches]
    kl = score_importance(model, batches, method="fisher", loss="kl")
    task = score_importance(model, shifted, method="fisher", loss="task")
    torch.testing.assert_close(kl.head, task.head)
    torch.testing.assert_close(kl.neuron, task.neuron)
    assert (kl.head > 0).all()


def test_kl_needs_no_labels_and_extra_keys_are_ignored():
    model = make_tiny_model("electra", num_layers=2)
    batches = make_tiny_batches(model)
    unlabelled = [{**{k: v for k, v in b.items() if k != "labels"},
                   "example_id": torch.arange(4)} for b in batches]
    with_labels = score_importance(model, batches, method="michel", loss="kl")
    without = score_importance(model, unlabelled, method="michel", loss="kl")
    assert torch.equal(with_labels.head, without.head)


@pytest.mark.parametrize("method", sorted(SCORERS))
def test_per_layer_normalisation_gives_unit_rows(method):
    model = make_tiny_model("mpnet", num_layers=LAYERS)
    scores = score_importance(model, make_tiny_batches(model), method=method, normalize=True)
    torch.testing.assert_close(scores.head.norm(dim=1), torch.ones(LAYERS, dtype=torch.float64))
    torch.testing.assert_close(scores.neuron.norm(dim=1),
                               torch.ones(LAYERS, dtype=torch.float64))
    assert scores.info["normalize"] is True and scores.info["method"] == method


def test_info_records_the_method_the_loss_and_the_data():
    model = make_tiny_model("bert", num_layers=2)
    batches = make_tiny_batches(model)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert score_importance(model, batches, method="fisher", loss="kl").info == {
        "method": "fisher", "loss": "kl", "normalize": False, "examples": 8, "tokens": tokens}
    assert score_importance(model, [], method="weight").info["loss"] is None


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "mitchel"}, "unknown importance method"),
    ({"loss": "ce"}, "unknown importance loss"),
])
def test_bad_choices_are_user_errors(kwargs, message):
    model = make_tiny_model("bert", num_layers=2)
    with pytest.raises(LayergraftError, match=message):
        score_importance(model, make_tiny_batches(model), **kwargs)


def test_empty_data_is_a_user_error():
    with pytest.raises(LayergraftError, match="empty"):
        score_importance(make_tiny_model("bert", num_layers=2), [], method="michel")
