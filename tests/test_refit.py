"""Least-squares refit after surgery: the LayerNorm-inverted target is exact, and the fit
brings every family's new layers closer to the teacher."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TINY_FAMILIES, make_tiny_batches, make_tiny_model

from layergraft.surgery.graft import graft_model
from layergraft.surgery.refit import refit_outputs

FAMILIES = TINY_FAMILIES  # the architecture table and its variants (deberta-v3)


def hidden(model, batches):
    with torch.no_grad():
        return [model(**{k: v for k, v in b.items() if k != "labels"},
                      output_hidden_states=True).hidden_states for b in batches]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_refit_to_its_own_states_is_unchanged(family):
    model = make_tiny_model(family, num_layers=3)
    batches = make_tiny_batches(model, n_batches=3)
    refit = copy.deepcopy(model)
    report = refit_outputs(refit, model, [1, 2, 3], batches, ridge=1e-6)
    assert all(r["mse_before"] < 1e-10 for r in report)
    for a, b in zip(model.state_dict().values(), refit.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_refit_brings_each_new_layer_closer_to_the_end_of_its_span(family):
    model = make_tiny_model(family, num_layers=4)
    batches = make_tiny_batches(model, n_batches=4, batch=8)
    student, manifest = graft_model(model, layers=2, method="drop-alternate")
    targets = manifest.steps[-1].span_ends()
    assert targets == [2, 4]
    report = refit_outputs(student, model, targets, batches)
    assert all(r["mse_after"] < r["mse_before"] for r in report)
    with torch.no_grad():  # measured afresh: the last layer's output moved towards the teacher
        mask = batches[0]["attention_mask"].bool()
        before, _ = graft_model(model, layers=2, method="drop-alternate")
        gap = [(hidden(m, batches[:1])[0][-1] - hidden(model, batches[:1])[0][-1])[mask]
               .pow(2).mean() for m in (before, student)]
    assert gap[1] < gap[0]


def test_one_target_per_student_layer_is_required():
    from layergraft.errors import LayergraftError

    model = make_tiny_model("bert", num_layers=3)
    with pytest.raises(LayergraftError, match="one teacher hidden-state index"):
        refit_outputs(copy.deepcopy(model), model, [1, 2], make_tiny_batches(model))
