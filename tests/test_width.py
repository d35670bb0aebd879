"""FFN width in the graft (--ffn-size): full width is today's graft, a narrower student loads
with stock from_pretrained, the kept neurons are the best by score, and bad input is one line.
--heads is refused for the BERT family (heads are tied to the hidden size there)."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import make_tiny_batches, make_tiny_model
from test_cli import assert_one_line_error, run_cli
from tiny_task import save_tiny_teacher
from transformers import AutoModelForSequenceClassification

from layergraft.errors import LayergraftError
from layergraft.models import save_model
from layergraft.surgery.arch import encoder_layers, spec_for
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest, replay
from layergraft.surgery.methods import GraftOptions
from layergraft.surgery.plan import Plan

LAYERS, HEADS, FFN = 4, 4, 37
FAMILIES = ["bert", "roberta", "mpnet", "distilbert"]


def scores(seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"head_scores": torch.rand(LAYERS, HEADS, generator=generator),
            "neuron_scores": torch.rand(LAYERS, FFN, generator=generator)}


def logits(model, batches):
    with torch.no_grad():
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits
                          for b in batches])


def widths(model) -> list[int]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.ffn_in).out_features for layer in encoder_layers(model)]


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet"])
@pytest.mark.parametrize("ffn_size", [FFN, 1.0, "1.0", str(FFN)])
def test_full_width_is_todays_graft(family, ffn_size):
    model = make_tiny_model(family, num_layers=LAYERS)
    for plan in (None, Plan.from_spans(LAYERS, "1-2")):
        layers = None if plan else 2
        today, _ = graft_model(model, layers=layers, plan=plan, **scores())
        full, manifest = graft_model(model, layers=layers, plan=plan, **scores(),
                                     options=GraftOptions(ffn_size=ffn_size))
        assert today.state_dict().keys() == full.state_dict().keys()
        assert all(torch.equal(today.state_dict()[k], v) for k, v in full.state_dict().items())
        assert full.config.to_dict() == today.config.to_dict()
        assert manifest.steps[-1].width["intact"] == "kept"


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_from_pretrained_loads_the_narrower_student(family, tmp_path):
    model = make_tiny_model(family, num_layers=LAYERS)
    batches = make_tiny_batches(model)
    student, manifest = graft_model(model, layers=2, **scores(),
                                    options=GraftOptions(ffn_size=0.5))
    assert widths(student) == [19, 19]  # 0.5 x 37 rounds half up
    save_model(student, None, tmp_path / "student", manifest=manifest)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert widths(loaded) == [19, 19]
    assert torch.equal(logits(loaded, batches), logits(student, batches))
    rebuilt = replay(model, Manifest.load(tmp_path / "student"))
    assert torch.equal(logits(rebuilt, batches), logits(student, batches))
    assert Manifest.load(tmp_path / "student").steps[-1].options["ffn_size"] == 0.5


def test_kept_neurons_are_the_top_n_by_score_and_intact_layers_shrink_with_a_warning(caplog):
    model = make_tiny_model("bert", num_layers=LAYERS)
    given = scores()
    with caplog.at_level(logging.WARNING):
        student, manifest = graft_model(model, plan=Plan.from_spans(LAYERS, "1-2"), **given,
                                        options=GraftOptions(ffn_size=10))
    assert widths(student) == [10, 10, 10] and student.config.intermediate_size == 10
    warnings = [r.getMessage() for r in caplog.records if "--ffn-size" in r.getMessage()]
    assert len(warnings) == 1 and "uniform" in warnings[0]
    width = manifest.steps[-1].width
    assert width["intact"] == "shrunk" and width["intact_layers"] == [0, 2]
    neurons = given["neuron_scores"]
    pool = torch.cat([neurons[1], neurons[2]])
    best = {(1 + int(k) // FFN, int(k) % FFN) for k in torch.topk(pool, 10).indices}
    layers = manifest.composed_layers()
    assert {tuple(u) for u in layers[1]["neurons"]} == best
    for new, old in ((0, 0), (2, 3)):  # layers kept whole keep their own top 10
        assert {u[1] for u in layers[new]["neurons"]} == set(
            torch.topk(neurons[old], 10).indices.tolist())
    # and the weights are those neurons' rows of W1 and columns of W2
    source, target = encoder_layers(model), encoder_layers(student)
    for position, (layer, index) in enumerate(layers[1]["neurons"]):
        row = target[1].intermediate.dense.weight[position]
        assert torch.equal(row, source[layer].intermediate.dense.weight[index])
        assert torch.equal(target[1].output.dense.weight[:, position],
                           source[layer].output.dense.weight[:, index])


def test_ffn_size_all_shrinks_without_a_warning(caplog):
    model = make_tiny_model("roberta", num_layers=LAYERS)
    with caplog.at_level(logging.WARNING):
        _, manifest = graft_model(model, plan=Plan.from_spans(LAYERS, "1-2"), **scores(),
                                  options=GraftOptions(ffn_size=10, ffn_size_all=True))
    assert not [r for r in caplog.records if "--ffn-size" in r.getMessage()]
    assert manifest.steps[-1].width["why"] == "--ffn-size-all"


def test_a_fraction_is_of_the_teachers_width_in_a_chained_graft():
    model = make_tiny_model("bert", num_layers=LAYERS)
    options = GraftOptions(ffn_size=0.5)
    first, manifest = graft_model(model, layers=2, **scores(), options=options)
    second, manifest = graft_model(first, layers=1, head_scores=torch.rand(2, HEADS),
                                   neuron_scores=torch.rand(2, 19), options=options,
                                   manifest=manifest)
    assert widths(second) == [19]


@pytest.mark.parametrize("value, fragment", [
    (0, "1 neuron or more"), (-3, "1 neuron or more"), (0.0, "fraction in (0, 1]"),
    (1.5, "fraction in (0, 1]"), ("half", "not 'half'"), ("2.0", "fraction in (0, 1]"),
])
def test_bad_ffn_size_is_one_line(value, fragment):
    with pytest.raises(LayergraftError, match=None) as error:
        GraftOptions(ffn_size=value)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_ffn_size_above_the_spans_neurons_or_wider_than_intact_layers_is_refused():
    model = make_tiny_model("mpnet", num_layers=LAYERS)
    with pytest.raises(LayergraftError, match="more neurons than layers 0-1 hold together"):
        graft_model(model, layers=2, **scores(), options=GraftOptions(ffn_size=2 * FFN + 1))
    wide, _ = graft_model(model, layers=2, **scores(), options=GraftOptions(ffn_size=2 * FFN))
    assert widths(wide) == [2 * FFN] * 2  # the whole pool of both pairs
    with pytest.raises(LayergraftError, match="wider than the 37 neurons of the layers"):
        graft_model(model, plan=Plan.from_spans(LAYERS, "1-2"), **scores(),
                    options=GraftOptions(ffn_size=FFN + 1))
    with pytest.raises(LayergraftError, match="not 'drop-top'"):
        graft_model(model, layers=2, method="drop-top", options=GraftOptions(ffn_size=8))
    with pytest.raises(LayergraftError, match="give --ffn-size too"):
        GraftOptions(ffn_size_all=True)


def test_heads_is_refused_for_bert_family_configs():
    model = make_tiny_model("bert", num_layers=LAYERS)
    with pytest.raises(LayergraftError, match="head_dim apart from hidden_size") as error:
        graft_model(model, layers=2, **scores(), options=GraftOptions(heads=2))
    assert "pruned_heads" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("flags, fragment", [
    (["--ffn-size", "0"], "1 neuron or more"),
    (["--ffn-size", "200"], "more neurons than layers"),
    (["--heads", "2"], "head_dim apart from hidden_size"),
])
def test_cli_bad_width_is_one_line(monkeypatch, capsys, tmp_path, flags, fragment):
    teacher = save_tiny_teacher(tmp_path / "tiny")
    code, _, err = run_cli(monkeypatch, capsys, "graft", teacher, "--layers", "2",
                           "--method", "random", "--out", str(tmp_path / "s"), *flags)
    assert_one_line_error(code, err, fragment)


def test_cli_graft_with_ffn_size_saves_a_narrower_student(monkeypatch, capsys, tmp_path):
    teacher = save_tiny_teacher(tmp_path / "tiny")
    code, out, _ = run_cli(monkeypatch, capsys, "graft", teacher, "--layers", "2", "--method",
                           "random", "--ffn-size", "0.25", "--out", str(tmp_path / "s"))
    assert code == 0, out
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert loaded.config.intermediate_size == 9 and widths(loaded) == [9, 9]


def test_a_grid_with_a_width_and_a_layer_drop_is_refused_before_any_run(tmp_path):
    import layergraft

    teacher = save_tiny_teacher(tmp_path / "tiny")
    with pytest.raises(LayergraftError, match="not 'drop-top'"):
        layergraft.compare(teacher, "movie-sentiment", out=tmp_path / "grid", layers=[2],
                           methods=["graft", "drop-top"], dry_run=True,
                           graft_options=GraftOptions(ffn_size=0.5))


def test_compress_and_compare_take_the_width_flags(monkeypatch, capsys):
    for command in ("graft", "compress", "compare"):
        code, out, _ = run_cli(monkeypatch, capsys, command, "--help")
        assert code == 0 and all(flag in out for flag in ("--ffn-size", "--ffn-size-all",
                                                          "--heads")), command
