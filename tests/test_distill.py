"""Distillation loss and teacher cache: equal to a live teacher, keyed by content, exact terms."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import make_tiny_model, pad_further
from scipy.special import log_softmax, softmax
from tiny_task import one_thread, save_tiny_teacher, write_tiny_task

from layergraft.data.encoding import encode, loader
from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.models import load_classifier
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.plan import Plan
from layergraft.training import distill
from layergraft.training.distill import (
    DistillConfig,
    LiveTeacher,
    TeacherCache,
    cache_path,
    layer_map_from_manifest,
    make_distill_loss,
)

LAYERS = 4
assert one_thread  # an autouse fixture


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny teacher, its tokenizer and the tiny task's train split, encoded."""
    root = tmp_path_factory.mktemp("distill")
    teacher, tokenizer = load_classifier(save_tiny_teacher(root / "teacher", num_layers=LAYERS))
    encoded = encode(load_task(write_tiny_task(root / "task")), tokenizer, max_length=24)
    return teacher, tokenizer, encoded["train"]


def ones_scores(model):
    return (torch.ones(LAYERS, model.config.num_attention_heads),
            torch.ones(LAYERS, model.config.intermediate_size))


def shuffled_batch(dataset, tokenizer, extra_padding=3):
    """A batch in an order unlike the cache's, padded further than the cache ever saw."""
    batch = next(iter(loader(dataset, tokenizer, 8, shuffle=True, seed=1)))
    return pad_further(batch, extra_padding, tokenizer.pad_token_id)


@pytest.mark.parametrize(("method", "spans", "expected"), [
    ("drop-top", None, [1, 4]),
    ("drop-bottom", None, [3, 4]),
    ("drop-alternate", None, [2, 4]),
    ("graft", "0-1,2-3", [2, 4]),
    ("graft", "0-2", [3, 4]),
    ("average", "1-3", [1, 4]),
])
def test_layer_map_points_at_the_teacher_layer_ending_each_span(method, spans, expected):
    model = make_tiny_model("bert", num_layers=LAYERS)
    heads, neurons = ones_scores(model)
    plan = Plan.from_spans(LAYERS, spans) if spans else None
    _, manifest = graft_model(model, layers=None if plan else 2, plan=plan, method=method,
                              head_scores=heads, neuron_scores=neurons)
    assert layer_map_from_manifest(manifest) == expected


def test_layer_map_of_a_chained_graft_and_of_the_teacher_itself():
    model = make_tiny_model("bert", num_layers=LAYERS)
    heads, neurons = ones_scores(model)
    assert layer_map_from_manifest(Manifest.for_teacher(model)) == [1, 2, 3, 4]
    middle, manifest = graft_model(model, plan=Plan.from_spans(LAYERS, "2-3"),
                                   head_scores=heads, neuron_scores=neurons)
    _, manifest = graft_model(middle, plan=Plan.from_spans(3, "1-2"), manifest=manifest,
                              head_scores=heads[:3], neuron_scores=neurons[:3])
    assert manifest.depths() == [4, 3, 2]
    assert layer_map_from_manifest(manifest) == [1, 4]


@pytest.mark.parametrize("hidden_weight", [0.0, 1.0])
def test_cached_and_live_teacher_give_the_same_loss(setup, tmp_path, hidden_weight):
    teacher, tokenizer, train = setup
    student, manifest = graft_model(teacher, layers=2, method="drop-alternate")
    layer_map = layer_map_from_manifest(manifest)
    config = DistillConfig(temperature=3.0, hidden_weight=hidden_weight, task_weight=0.5)
    batch = shuffled_batch(train, tokenizer)
    live = make_distill_loss(teacher, config, layer_map=layer_map)(student, batch)
    exact = TeacherCache.build(teacher, train, tokenizer, layers=layer_map, cache_dir=tmp_path,
                               dtype=torch.float32, batch_size=16)
    torch.testing.assert_close(make_distill_loss(exact, config, layer_map=layer_map)(
        student, batch), live, rtol=1e-5, atol=1e-6)
    compact = TeacherCache.build(teacher, train, tokenizer, layers=layer_map,
                                 cache_dir=tmp_path / "fp16", batch_size=16)
    assert all(h.dtype == torch.float16 for h in compact.hidden.values())
    torch.testing.assert_close(make_distill_loss(compact, config, layer_map=layer_map)(
        student, batch), live, rtol=2e-3, atol=1e-4)


def test_student_identical_to_teacher_has_zero_loss(setup, tmp_path):
    teacher, tokenizer, train = setup
    student = copy.deepcopy(teacher)
    layer_map = layer_map_from_manifest(Manifest.for_teacher(teacher))
    cache = TeacherCache.build(teacher, train, tokenizer, layers=layer_map, cache_dir=tmp_path,
                               dtype=torch.float32)
    loss_fn = make_distill_loss(cache, DistillConfig(hidden_weight=1.0), layer_map=layer_map)
    assert loss_fn(student, shuffled_batch(train, tokenizer)).item() < 1e-6


def test_soft_logit_term_is_the_temperature_scaled_kl(setup):
    teacher, tokenizer, train = setup
    student = make_tiny_model("bert", num_layers=2, seed=5)
    with torch.no_grad():
        student.classifier.bias += torch.tensor([2.0, -2.0])  # far from the teacher
    batch = next(iter(loader(train, tokenizer, 8)))
    temperature = 2.5
    loss = make_distill_loss(teacher, DistillConfig(temperature=temperature))(student, batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        s = student(**inputs).logits.double().numpy() / temperature
        t = teacher(**inputs).logits.double().numpy() / temperature
    kl = (softmax(t, -1) * (log_softmax(t, -1) - log_softmax(s, -1))).sum(-1).mean()
    assert loss.item() == pytest.approx(kl * temperature**2, rel=1e-5)


def test_task_term_is_the_models_own_loss(setup):
    teacher, tokenizer, train = setup
    student = make_tiny_model("bert", num_layers=2, seed=5)
    batch = next(iter(loader(train, tokenizer, 8)))
    config = DistillConfig(logit_weight=0.0, task_weight=1.0)
    loss = make_distill_loss(teacher, config)(student, batch)
    own = student(**{k: v for k, v in batch.items() if k != "example_id"}).loss
    torch.testing.assert_close(loss, own)


def test_regression_output_term_is_mse_to_the_teacher(tmp_path):
    teacher, tokenizer = load_classifier(save_tiny_teacher(tmp_path / "t", num_labels=1))
    train = encode(load_task(write_tiny_task(tmp_path / "task", regression=True)), tokenizer,
                   max_length=24)["train"]
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.classifier.bias += 0.5
    cache = TeacherCache.build(teacher, train, tokenizer, cache_dir=tmp_path / "cache")
    loss = make_distill_loss(cache, DistillConfig())(student, shuffled_batch(train, tokenizer))
    assert loss.item() == pytest.approx(0.25, rel=1e-5)


def test_hidden_term_ignores_padding(setup):
    teacher, tokenizer, train = setup
    student, manifest = graft_model(teacher, layers=2, method="drop-top")
    loss_fn = make_distill_loss(LiveTeacher(teacher), DistillConfig(hidden_weight=1.0),
                                layer_map=layer_map_from_manifest(manifest))
    batch = next(iter(loader(train, tokenizer, 8)))
    torch.testing.assert_close(loss_fn(student, pad_further(batch, 5, tokenizer.pad_token_id)),
                               loss_fn(student, batch), rtol=1e-5, atol=1e-6)


def test_cache_is_reused_extended_and_rebuilt_when_teacher_or_data_change(setup, tmp_path,
                                                                         monkeypatch):
    teacher, tokenizer, train = setup
    built = []
    compute = distill._compute
    monkeypatch.setattr(distill, "_compute",
                        lambda *args: built.append(list(args[3])) or compute(*args))
    TeacherCache.build(teacher, train, tokenizer, layers=[2], cache_dir=tmp_path)
    TeacherCache.build(teacher, train, tokenizer, layers=[2], cache_dir=tmp_path)
    assert built == [[2]]  # second call read the files
    cache = TeacherCache.build(teacher, train, tokenizer, layers=[2, 4], cache_dir=tmp_path)
    assert built == [[2], [4]] and set(cache.hidden) == {2, 4}  # only the missing layer ran

    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed.classifier.weight[0, 0] += 1e-3
    assert cache_path(changed, train, tmp_path) != cache_path(teacher, train, tmp_path)
    fewer = train.select(range(len(train) - 1))
    assert cache_path(teacher, fewer, tmp_path) != cache_path(teacher, train, tmp_path)
    TeacherCache.build(changed, train, tokenizer, cache_dir=tmp_path)
    assert built[-1] == []  # a new teacher gets its own logits


def test_cache_refuses_examples_or_tokenisation_it_was_not_built_on(setup, tmp_path):
    teacher, tokenizer, train = setup
    half = train.select(range(len(train) // 2))
    cache = TeacherCache.build(teacher, half, tokenizer, layers=[1], cache_dir=tmp_path)
    other = next(iter(loader(train.select(range(len(train) // 2, len(train))), tokenizer, 4)))
    with pytest.raises(LayergraftError, match="not built on"):
        cache.outputs(other)
    batch = pad_further(next(iter(loader(half, tokenizer, 4))), 1, tokenizer.pad_token_id)
    batch["attention_mask"][:] = 1  # more real tokens than the cache stored
    with pytest.raises(LayergraftError, match="differently tokenised"):
        cache.outputs(batch, [1])


def test_ordered_logits_follow_example_ids(setup, tmp_path):
    teacher, tokenizer, train = setup
    reversed_rows = train.select(range(len(train) - 1, -1, -1))
    cache = TeacherCache.build(teacher, reversed_rows, tokenizer, cache_dir=tmp_path)
    live = torch.cat([LiveTeacher(teacher).outputs(b).logits for b in loader(train, tokenizer,
                                                                             16)])
    np.testing.assert_allclose(cache.ordered_logits().numpy(), live.numpy(), atol=1e-5)


@pytest.mark.parametrize("fields", [dict(temperature=0), dict(hidden_weight=-1),
                                    dict(logit_weight=0)])
def test_distill_config_rejects_bad_settings(fields):
    with pytest.raises(LayergraftError):
        DistillConfig(**fields)
