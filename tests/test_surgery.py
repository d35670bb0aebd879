"""Surgery contract, run over tiny random models of every supported family."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TINY_FAMILIES, make_tiny_batches, make_tiny_model
from transformers import AutoModelForSequenceClassification

from layergraft.errors import LayergraftError
from layergraft.models import save_model
from layergraft.surgery.arch import ARCH_SPECS, encoder_layers, spec_for
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest, replay
from layergraft.surgery.methods import GraftOptions
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import unchanged_parameters

FAMILIES = TINY_FAMILIES  # the architecture table and its variants (deberta-v3)
LAYERS, HEADS, FFN = 4, 4, 37


def logits(model, batches):
    with torch.no_grad():
        return torch.cat([
            model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches
        ])


def dropped(model, layer):
    """Reference drop built by hand: delete one layer from a deep copy."""
    reference = copy.deepcopy(model)
    del encoder_layers(reference)[layer]
    reference.config.num_hidden_layers -= 1
    return reference


def scores_favouring(layer):
    heads = torch.zeros(LAYERS, HEADS)
    neurons = torch.zeros(LAYERS, FFN)
    heads[layer] = 1.0
    neurons[layer] = 1.0
    return heads, neurons


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["earlier", "later"])
def test_graft_taking_everything_from_one_layer_equals_dropping_the_other(family, side):
    model = make_tiny_model(family, num_layers=LAYERS)
    batches = make_tiny_batches(model)
    pair = (1, 2)
    kept, gone = (pair[0], pair[1]) if side == "earlier" else (pair[1], pair[0])
    heads, neurons = scores_favouring(kept)
    student, manifest = graft_model(
        model, plan=Plan.from_spans(LAYERS, "1-2"), head_scores=heads, neuron_scores=neurons,
        options=GraftOptions(bias=side, norm=side),
    )
    assert student.config.num_hidden_layers == LAYERS - 1
    torch.testing.assert_close(logits(student, batches), logits(dropped(model, gone), batches),
                               rtol=1e-5, atol=1e-6)
    assert manifest.composed_layers()[1]["sources"] == [1, 2]
    assert {h[0] for h in manifest.composed_layers()[1]["heads"]} == {kept}


@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_stock_load_and_replay_are_bit_identical(family, tmp_path):
    model = make_tiny_model(family, num_layers=LAYERS)
    batches = make_tiny_batches(model)
    generator = torch.Generator().manual_seed(1)
    heads, neurons = torch.rand(LAYERS, HEADS, generator=generator), torch.rand(
        LAYERS, FFN, generator=generator)
    student, manifest = graft_model(model, layers=2, head_scores=heads, neuron_scores=neurons)
    save_model(student, None, tmp_path / "student", manifest=manifest)

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert torch.equal(logits(loaded, batches), logits(student, batches))
    rebuilt = replay(model, Manifest.load(tmp_path / "student"))
    assert torch.equal(logits(rebuilt, batches), logits(student, batches))


def test_surgery_leaves_the_input_model_untouched():
    model = make_tiny_model("bert", num_layers=LAYERS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graft_model(model, layers=2, method="random")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.config.num_hidden_layers == LAYERS


def test_grafted_layer_keeps_the_highest_scoring_units_of_both_layers():
    model = make_tiny_model("bert", num_layers=LAYERS)
    heads = torch.zeros(LAYERS, HEADS)
    heads[0, [0, 3]] = 1.0
    heads[1, [1, 2]] = 1.0
    neurons = torch.arange(LAYERS * FFN, dtype=torch.float).reshape(LAYERS, FFN).flip(1)
    _, manifest = graft_model(model, plan=Plan.from_spans(LAYERS, "0-1"), head_scores=heads,
                              neuron_scores=neurons)
    layer = manifest.composed_layers()[0]
    assert layer["heads"] == [[0, 0], [0, 3], [1, 1], [1, 2]]
    # layer 1 scores higher everywhere, so all its neurons are kept
    assert {src for src, _ in layer["neurons"]} == {1}
    teacher_q = encoder_layers(model)[0].attention.self.query.weight
    student, _ = graft_model(model, plan=Plan.from_spans(LAYERS, "0-1"), head_scores=heads,
                             neuron_scores=neurons)
    student_q = encoder_layers(student)[0].attention.self.query.weight
    head_dim = teacher_q.shape[0] // HEADS
    assert torch.equal(student_q[head_dim: 2 * head_dim], teacher_q[3 * head_dim: 4 * head_dim])


def test_summed_bias_and_mean_norm():
    model = make_tiny_model("bert", num_layers=LAYERS)
    student, _ = graft_model(model, plan=Plan.from_spans(LAYERS, "2-3"), method="random",
                             options=GraftOptions(bias="sum", norm="mean"))
    old, new = encoder_layers(model), encoder_layers(student)
    torch.testing.assert_close(new[2].output.dense.bias,
                               old[2].output.dense.bias + old[3].output.dense.bias)
    mean_norm = (old[2].output.LayerNorm.weight + old[3].output.LayerNorm.weight) / 2
    torch.testing.assert_close(new[2].output.LayerNorm.weight, mean_norm)


def test_mpnet_heads_stay_in_their_slots_and_the_shared_table_is_untouched():
    model = make_tiny_model("mpnet", num_layers=LAYERS)
    generator = torch.Generator().manual_seed(3)
    heads = torch.rand(LAYERS, HEADS, generator=generator)
    student, manifest = graft_model(model, layers=2, head_scores=heads,
                                    neuron_scores=torch.rand(LAYERS, FFN, generator=generator))
    for layer in manifest.composed_layers():
        assert [h for _, h in layer["heads"]] == list(range(HEADS))
        for slot, (source, _) in enumerate(layer["heads"]):
            group = layer["sources"]
            assert heads[source, slot] == heads[group, slot].max()
    table = spec_for(model).shared_head_table
    assert torch.equal(student.base_model.get_submodule(table).weight,
                       model.base_model.get_submodule(table).weight)


def test_chained_grafts_trace_back_to_the_teacher(tmp_path):
    model = make_tiny_model("bert", num_layers=LAYERS)
    batches = make_tiny_batches(model)
    middle, manifest = graft_model(model, layers=2, method="random", seed=1)
    save_model(middle, None, tmp_path / "middle", manifest=manifest)
    final, manifest = graft_model(middle, layers=1, method="random", seed=2,
                                  manifest=Manifest.load(tmp_path / "middle"))
    assert manifest.depths() == [4, 2, 1]
    layer = manifest.composed_layers()[0]
    assert layer["sources"] == [0, 1, 2, 3]
    assert all(0 <= src < LAYERS and 0 <= h < HEADS for src, h in layer["heads"])
    assert torch.equal(logits(replay(model, manifest), batches), logits(final, batches))


@pytest.mark.parametrize(("method", "kept"), [
    ("drop-top", [0, 1]), ("drop-bottom", [2, 3]), ("drop-alternate", [1, 3])])
def test_drop_methods_keep_the_expected_layers(method, kept):
    model = make_tiny_model("roberta", num_layers=LAYERS)
    batches = make_tiny_batches(model)
    student, manifest = graft_model(model, layers=2, method=method)
    reference = model
    for layer in sorted(set(range(LAYERS)) - set(kept), reverse=True):
        reference = dropped(reference, layer)
    assert torch.equal(logits(student, batches), logits(reference, batches))
    assert [sorted({h[0] for h in view["heads"]}) for view in manifest.composed_layers()] == [
        [k] for k in kept]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_unchanged_parameters_are_those_surgery_copied_as_they_were(family):
    model = make_tiny_model(family, num_layers=LAYERS)
    student, manifest = graft_model(model, plan=Plan.from_spans(LAYERS, "1-2"),
                                    method="random")
    names = unchanged_parameters(student, manifest.steps[-1].recipes)
    old, new = dict(model.named_parameters()), dict(student.named_parameters())
    assert all(torch.equal(new[name], old[source]) for name, source in names.items())
    merged = {id(p) for p in encoder_layers(student)[1].parameters()}
    assert merged and {id(new[name]) for name in set(new) - set(names)} == merged
    layers = encoder_layers(model)  # the kept layers come from layers 0 and 3
    sources = {id(old[source]) for source in names.values()}
    assert sources & {id(p) for p in layers.parameters()} == {
        id(p) for i in (0, 3) for p in layers[i].parameters()}


def test_drop_similar_drops_the_layers_that_change_least():
    model = make_tiny_model("bert", num_layers=LAYERS)
    cosine = torch.tensor([0.5, 0.99, 0.2, 0.98])
    _, manifest = graft_model(model, layers=2, method="drop-similar", adjacent_cosine=cosine)
    assert [view["sources"] for view in manifest.composed_layers()] == [[0], [2]]


def test_average_merges_weights():
    model = make_tiny_model("electra", num_layers=LAYERS)
    student, manifest = graft_model(model, layers=2, method="average",
                                    plan=Plan.from_spans(LAYERS, "0-1,2-3"))
    old, new = encoder_layers(model), encoder_layers(student)
    mean_w1 = (old[2].intermediate.dense.weight + old[3].intermediate.dense.weight) / 2
    torch.testing.assert_close(new[1].intermediate.dense.weight, mean_w1)
    assert manifest.composed_layers()[1]["heads"] is None


def test_similarity_plan_merges_most_similar_neighbours_first():
    cka = torch.eye(5)
    cka[1, 2] = cka[2, 1] = 0.9   # layers 0 and 1 produce similar outputs
    cka[3, 4] = cka[4, 3] = 0.8   # so do layers 2 and 3
    cka[2, 3] = cka[3, 2] = 0.95
    assert Plan.by_similarity(cka, 3).groups == ((0,), (1, 2), (3,))
    assert Plan.by_similarity(cka, 2).groups == ((0, 1), (2, 3))


@pytest.mark.parametrize(("spans", "message"), [
    ("0-1,1-2", "overlap"), ("3-4", "does not fit"), ("a-b", "cannot read")])
def test_bad_plans_get_clear_errors(spans, message):
    with pytest.raises(LayergraftError, match=message):
        Plan.from_spans(LAYERS, spans)


def test_unknown_method_and_target_depth_errors():
    model = make_tiny_model("bert", num_layers=LAYERS)
    with pytest.raises(LayergraftError, match="did you mean 'graft'"):
        graft_model(model, layers=2, method="graf")
    with pytest.raises(LayergraftError, match="between 1 and 3"):
        graft_model(model, layers=7, method="random")
    with pytest.raises(LayergraftError, match="needs importance scores"):
        graft_model(model, layers=2)


def test_unsupported_architecture_lists_supported_families():
    from transformers import GPT2Config

    from layergraft.surgery.arch import spec_for_config
    with pytest.raises(LayergraftError, match="supports bert"):
        spec_for_config(GPT2Config())


def test_refuses_to_overwrite_a_saved_model(tmp_path):
    model = make_tiny_model("bert", num_layers=LAYERS)
    save_model(model, None, tmp_path / "out")
    with pytest.raises(LayergraftError, match="--overwrite"):
        save_model(model, None, tmp_path / "out")
    save_model(model, None, tmp_path / "out", overwrite=True)


def test_one_source_per_group_equals_keeping_the_top_layer_of_each_group():
    model = make_tiny_model("bert", num_layers=LAYERS)
    batches = make_tiny_batches(model)
    heads, neurons = torch.rand(LAYERS, HEADS), torch.rand(LAYERS, FFN)
    student, _ = graft_model(model, plan=Plan.from_spans(LAYERS, "0-1,2-3"), head_scores=heads,
                             neuron_scores=neurons, options=GraftOptions(max_sources=1))
    kept_alternate, _ = graft_model(model, layers=2, method="drop-alternate")
    assert torch.equal(logits(student, batches), logits(kept_alternate, batches))


def test_max_sources_grafts_only_the_top_layers_of_a_deep_group():
    model = make_tiny_model("bert", num_layers=LAYERS)
    heads, neurons = torch.rand(LAYERS, HEADS), torch.rand(LAYERS, FFN)
    _, manifest = graft_model(model, layers=1, head_scores=heads, neuron_scores=neurons,
                              options=GraftOptions(max_sources=2))
    (layer,) = manifest.composed_layers()
    assert layer["sources"] == [2, 3]
    assert {h[0] for h in layer["heads"]} <= {2, 3}
    with pytest.raises(LayergraftError, match="max-sources"):
        GraftOptions(max_sources=-1)


@pytest.mark.parametrize(("depth", "target", "kept"), [
    (6, 3, [1, 3, 5]), (6, 4, [1, 2, 4, 5]), (6, 5, [1, 2, 3, 4, 5]), (6, 1, [5]),
    (12, 6, [1, 3, 5, 7, 9, 11]), (12, 4, [2, 5, 8, 11]), (12, 3, [3, 7, 11]),
    (12, 2, [5, 11]), (4, 2, [1, 3]), (24, 9, [2, 5, 7, 10, 13, 15, 18, 21, 23])])
def test_drop_alternate_keeps_layer_ceil_of_i_plus_one_times_depth_over_target(depth, target,
                                                                               kept):
    from layergraft.surgery.methods import MethodInput, drop_alternate

    _, recipes = drop_alternate(MethodInput(num_layers=depth, num_heads=1, ffn_width=1,
                                            target_layers=target))
    assert [recipe.sources[0] for recipe in recipes] == kept


def test_drop_alternate_spacing_is_even_and_ends_with_the_top_layer_at_every_depth():
    from layergraft.surgery.methods import MethodInput, drop_alternate

    for depth in range(2, 49):
        for target in range(1, depth):
            _, recipes = drop_alternate(MethodInput(num_layers=depth, num_heads=1, ffn_width=1,
                                                    target_layers=target))
            kept = [recipe.sources[0] for recipe in recipes]
            assert kept == [-(-(i + 1) * depth // target) - 1 for i in range(target)]
            assert kept[-1] == depth - 1
            gaps = [b - a for a, b in zip([-1, *kept], kept, strict=False)]
            assert min(gaps) >= 1 and max(gaps) - min(gaps) <= 1, (depth, target, kept)


@pytest.mark.parametrize("method", ["drop-alternate", "drop-top", "random", "average"])
@pytest.mark.parametrize("layers", [0, -1, LAYERS, LAYERS + 3])
def test_a_depth_out_of_range_says_which_depths_are_allowed(method, layers):
    model = make_tiny_model("bert", num_layers=LAYERS)
    message = f"--layers must be between 1 and {LAYERS - 1} for this {LAYERS}-layer model"
    with pytest.raises(LayergraftError, match=message):
        graft_model(model, layers=layers, method=method)


def test_the_contract_families_cover_the_whole_architecture_table():
    from helpers import family_of

    encoders = {name for name, spec in ARCH_SPECS.items() if not spec.decoder}
    assert {family_of(name) for name in FAMILIES} == encoders  # decoders: test_decoder_*
    assert "deberta-v3" in FAMILIES


# One encoder layer of each family, written out by hand from the transformers modelling code,
# independently of the ArchSpec table and of surgery/recipes.py: the linears whose output rows
# are grouped per attention head, the attention output (per-head input columns), the FFN's
# first linear (one row and bias per neuron) and second (one input column per neuron), and the
# two LayerNorms.
_BERT_LAYER = dict(
    per_head=("attention.self.query", "attention.self.key", "attention.self.value"),
    attn_out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
    norms=("attention.output.LayerNorm", "output.LayerNorm"))
_DEBERTA_LAYER = dict(
    _BERT_LAYER,
    per_head=("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"))
HAND_LAYERS = {
    "bert": _BERT_LAYER, "roberta": _BERT_LAYER, "xlm-roberta": _BERT_LAYER,
    "electra": _BERT_LAYER,
    "mpnet": dict(per_head=("attention.attn.q", "attention.attn.k", "attention.attn.v"),
                  attn_out="attention.attn.o", ffn_in="intermediate.dense",
                  ffn_out="output.dense", norms=("attention.LayerNorm", "output.LayerNorm")),
    "distilbert": dict(per_head=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                       attn_out="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2",
                       norms=("sa_layer_norm", "output_layer_norm")),
    # share_att_key off: the relative embeddings have their own per-head projections
    "deberta-v2": dict(_DEBERTA_LAYER, per_head=(
        *_DEBERTA_LAYER["per_head"], "attention.self.pos_key_proj",
        "attention.self.pos_query_proj")),
    "deberta-v3": _DEBERTA_LAYER,  # share_att_key: Q and K project the positions too
}
# Heads from both layers of the pair 1-2, out of order; MPNet's heads keep their slot.
MIXED_HEADS = ((2, 1), (1, 3), (2, 0), (1, 0))
SLOT_HEADS = ((2, 0), (1, 1), (2, 2), (1, 3))
BIAS, NORM = {1: 0.25, 2: 0.75}, {1: 0.625, 2: 0.375}


def weighted(layers, weights, name):
    total = 0
    for layer, weight in weights.items():
        total = total + weight * layers[layer][name]
    return total


def hand_made_graft(layers, heads, neurons, hand):
    """The state of the new layer, parameter by parameter, straight from the source layers."""
    out = {}
    for name, tensor in layers[0].items():
        module, _, kind = name.rpartition(".")
        if module in hand["per_head"]:
            size = tensor.shape[0] // HEADS
            out[name] = torch.cat([layers[layer][name][h * size:(h + 1) * size]
                                   for layer, h in heads])
        elif module == hand["attn_out"] and kind == "weight":
            size = tensor.shape[1] // HEADS
            out[name] = torch.cat([layers[layer][name][:, h * size:(h + 1) * size]
                                   for layer, h in heads], dim=1)
        elif module == hand["ffn_in"]:
            out[name] = torch.stack([layers[layer][name][n] for layer, n in neurons])
        elif module == hand["ffn_out"] and kind == "weight":
            out[name] = torch.stack([layers[layer][name][:, n] for layer, n in neurons], dim=1)
        elif module in (hand["attn_out"], hand["ffn_out"]):
            out[name] = weighted(layers, BIAS, name)
        elif module in hand["norms"]:
            out[name] = weighted(layers, NORM, name)
        else:
            raise AssertionError(f"{name}: a parameter the hand-written layer does not know")
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mixed_graft_equals_a_reference_built_by_hand_from_the_weights(family):
    import re

    from layergraft.surgery.recipes import LayerRecipe, apply_recipes, keep_recipe

    model = make_tiny_model(family, num_layers=LAYERS)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # random init leaves biases 0 and LayerNorms 1: any mix would fit
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    heads = SLOT_HEADS if family == "mpnet" else MIXED_HEADS
    order = torch.randperm(2 * FFN, generator=torch.Generator().manual_seed(5))[:FFN]
    neurons = tuple((1 + int(k) // FFN, int(k) % FFN) for k in order)
    assert {layer for layer, _ in neurons} == {1, 2} and list(neurons) != sorted(neurons)
    recipes = [keep_recipe(0, HEADS, FFN),
               LayerRecipe(sources=(1, 2), heads=heads, neurons=neurons, bias=BIAS, norm=NORM),
               keep_recipe(3, HEADS, FFN)]
    student = apply_recipes(model, recipes)

    pattern = re.compile(r"^(.+\.layer)\.(\d+)\.(.+)$")
    state = model.state_dict()
    layers = [{} for _ in range(LAYERS)]
    expected = {}
    for name, tensor in state.items():
        match = pattern.match(name)
        if match is None:
            expected[name] = tensor
        else:
            prefix = match[1]
            layers[int(match[2])][match[3]] = tensor
    new_layers = [layers[0], hand_made_graft(layers, heads, neurons, HAND_LAYERS[family]),
                  layers[3]]
    for index, layer in enumerate(new_layers):
        expected.update({f"{prefix}.{index}.{name}": t for name, t in layer.items()})

    got = student.state_dict()
    assert got.keys() == expected.keys()
    unequal = [name for name in got if not torch.equal(got[name], expected[name])]
    assert not unequal, unequal

    config = copy.deepcopy(model.config)
    config.num_hidden_layers = 3
    reference = type(model)(config).eval()
    reference.load_state_dict(expected, strict=True)
    batches = make_tiny_batches(model)
    assert torch.equal(logits(student, batches), logits(reference, batches))
