"""Surgery on decoder LLMs (llama, qwen2, qwen3, mistral): KV groups, SwiGLU neurons, folded
RMSNorms, per-layer config; checked against the teacher itself and a forward written by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_decoders import DECODER_FAMILIES, FFN, HEAD_DIM, HEADS, KV_HEADS, LAYERS, token_ids
from tiny_decoders import tiny_decoder as make
from transformers import AutoModelForCausalLM

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ARCH_SPECS, num_heads
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest, replay
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import LayerRecipe, apply_recipes, keep_recipe

N_REP = HEADS // KV_HEADS
CASES = [(family, tied) for family in DECODER_FAMILIES for tied in (False, True)]
IDS = [f"{family}-{'tied' if tied else 'untied'}" for family, tied in CASES]


def test_the_decoder_families_cover_the_decoder_rows_of_the_table():
    assert set(DECODER_FAMILIES) == {name for name, spec in ARCH_SPECS.items() if spec.decoder}


def _scores_favouring(layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance scores under which every unit of `layer` beats every other unit."""
    heads, neurons = torch.rand(LAYERS, KV_HEADS), torch.rand(LAYERS, FFN)
    heads[layer] += 10
    neurons[layer] += 10
    return heads, neurons


def _skipping(model, layer: int):
    """A forward hook making `layer` the identity: the teacher with that layer dropped."""
    def identity(module, args, kwargs, output):
        return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    return model.model.layers[layer].register_forward_hook(identity, with_kwargs=True)


@pytest.mark.parametrize(("family", "tied"), CASES, ids=IDS)
@pytest.mark.parametrize(("kept", "dropped"), [(2, 3), (3, 2)])
def test_grafting_every_unit_of_one_layer_equals_the_teacher_without_the_other(
        family, tied, kept, dropped):
    model = make(family, tied)
    heads, neurons = _scores_favouring(kept)
    student, _ = graft_model(model, plan=Plan.from_spans(LAYERS, "2-3"), head_scores=heads,
                             neuron_scores=neurons)
    ids = token_ids()
    handle = _skipping(model, dropped)
    try:
        with torch.no_grad():
            expected = model(ids).logits
    finally:
        handle.remove()
    with torch.no_grad():
        got = student(ids).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


def _rows(linear, start: int, stop: int, x: torch.Tensor) -> torch.Tensor:
    bias = None if linear.bias is None else linear.bias[start:stop]
    return F.linear(x, linear.weight[start:stop], bias)


def _reference_layer(teacher, recipe: LayerRecipe, x, cos, sin, window) -> torch.Tensor:
    """A grafted layer's output from the *teacher's* layers, one kept unit at a time: group g
    of layer s is query heads g*n_rep .. (g+1)*n_rep - 1 over KV head g, each unit under its
    own layer's norms (the unfolded computation that folding must reproduce)."""
    eps, d, length = teacher.config.rms_norm_eps, HEAD_DIM, x.shape[1]
    q_pos, k_pos = torch.arange(length)[:, None], torch.arange(length)[None, :]
    allowed = (k_pos <= q_pos) & ((q_pos - k_pos < window) if window else True)
    h = x.clone()
    for s, g in recipe.heads:
        attn = teacher.model.layers[s].self_attn
        xn = _rms(x, teacher.model.layers[s].input_layernorm.weight, eps)
        q = _rows(attn.q_proj, g * N_REP * d, (g + 1) * N_REP * d, xn).unflatten(-1, (N_REP, d))
        k = _rows(attn.k_proj, g * d, (g + 1) * d, xn)
        v = _rows(attn.v_proj, g * d, (g + 1) * d, xn)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k[:, :, None], cos, sin)[:, :, 0]
        scores = torch.einsum("bqhd,bkd->bhqk", q, k) * d ** -0.5
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        context = torch.einsum("bhqk,bkd->bqhd", probs, v).flatten(2)
        h = h + context @ attn.o_proj.weight[:, g * N_REP * d:(g + 1) * N_REP * d].T
    y = h.clone()
    for s, j in recipe.neurons:
        layer = teacher.model.layers[s]
        hn = _rms(h, layer.post_attention_layernorm.weight, eps)
        mlp = layer.mlp
        y = y + F.silu(hn @ mlp.gate_proj.weight[j]) [..., None] * (hn @ mlp.up_proj.weight[j])[
            ..., None] * mlp.down_proj.weight[:, j]
    return y


def _window(config, index: int) -> int | None:
    types = getattr(config, "layer_types", None)
    if types is not None:
        return config.sliding_window if types[index] == "sliding_attention" else None
    return getattr(config, "sliding_window", None)  # mistral: every layer, or none


def _mixed_recipe(family: str, a: int, b: int) -> LayerRecipe:
    """Groups crossing over (slot 0 <- b's group 1, slot 1 <- a's group 0) and neurons of both.
    Qwen3's q/k norms cannot be shared exactly by groups of two layers: its groups come from b
    (the crossing over is checked in test_qwen3_groups_of_another_layer_keep_their_direction)."""
    heads = ((b, 1), (b, 0)) if family == "qwen3" else ((a, 0), (b, 1))
    generator = torch.Generator().manual_seed(1)
    pool = [(layer, j) for layer in (a, b) for j in range(FFN)]
    neurons = sorted(pool[int(k)] for k in torch.randperm(len(pool), generator=generator)[:FFN])
    return LayerRecipe(sources=(a, b), heads=heads, neurons=tuple(neurons),
                       bias={a: 0.5, b: 0.5}, norm={a: 0.5, b: 0.5})


@pytest.mark.parametrize(("family", "tied"), CASES, ids=IDS)
def test_units_of_two_layers_match_a_hand_built_forward_of_those_units(family, tied):
    model = make(family, tied)
    recipes = [keep_recipe(0, KV_HEADS, FFN), _mixed_recipe(family, 0, 1),
               _mixed_recipe(family, 2, 3)]
    student = apply_recipes(model, recipes)
    ids = token_ids(length=10)
    with torch.no_grad():
        x = model.model.embed_tokens(ids)
        cos, sin = model.model.rotary_emb(x, torch.arange(ids.shape[1])[None])
        for index, recipe in enumerate(recipes):
            x = _reference_layer(model, recipe, x, cos, sin, _window(student.config, index))
        expected = model.lm_head(model.model.norm(x))
        got = student(ids).logits
    # the reference sums in another order, four layers deep: fp32 noise (1.6e-5 on AVX2); a
    # wrong unit would be off by 0.1 or more
    assert torch.allclose(got, expected, atol=5e-5), (got - expected).abs().max()
    layer, (source, other) = student.model.layers[1], model.model.layers[:2]
    assert torch.equal(layer.post_attention_layernorm.weight, torch.ones(32))  # folded
    if family == "qwen3":  # all groups from layer 1: its input norm as it was
        assert torch.equal(layer.input_layernorm.weight, other.input_layernorm.weight)
    else:  # folded into the kept rows' columns, which carry their biases (qwen2) along
        assert torch.equal(layer.input_layernorm.weight, torch.ones(32))
        folded = source.self_attn.k_proj.weight[:HEAD_DIM] * source.input_layernorm.weight
        assert torch.equal(layer.self_attn.k_proj.weight[:HEAD_DIM], folded)


def test_qwen3_groups_of_another_layer_keep_their_direction():
    """The new layer takes the q/k norms of the source giving most groups (on a tie the later,
    layer 1): its groups are exact; layer 0's group is rescaled so that its normalised
    queries and keys keep their direction (only their length differs)."""
    model = make("qwen3")
    recipe = LayerRecipe(sources=(0, 1), heads=((0, 1), (1, 0)),
                         neurons=tuple((0, j) for j in range(FFN)), bias={0: 1.0}, norm={0: 1.0})
    student = apply_recipes(model, [recipe, keep_recipe(2, 2, FFN), keep_recipe(3, 2, FFN)])
    new = student.model.layers[0].self_attn
    assert torch.equal(new.q_norm.weight, model.model.layers[1].self_attn.q_norm.weight)
    x = torch.randn(3, 5, 32)

    def normalised(layer, attn, norm, proj, rows):  # [batch, seq, heads of the group, d]
        xn = _rms(x, layer.input_layernorm.weight, model.config.rms_norm_eps)
        return norm(getattr(attn, proj)(xn).unflatten(-1, (-1, HEAD_DIM))[:, :, rows])

    with torch.no_grad():
        for norm, proj, per_group in (("q_norm", "q_proj", N_REP), ("k_norm", "k_proj", 1)):
            new_out = normalised(student.model.layers[0], new, getattr(new, norm), proj,
                                 slice(None))
            for slot, (s, g) in enumerate(recipe.heads):
                source = model.model.layers[s]
                want = normalised(source, source.self_attn, getattr(source.self_attn, norm), proj,
                                  slice(g * per_group, (g + 1) * per_group))
                have = new_out[:, :, slot * per_group:(slot + 1) * per_group]
                cosine = F.cosine_similarity(have, want, dim=-1)
                assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)
                assert torch.allclose(have, want, atol=1e-5) == (s == 1)


@pytest.mark.parametrize(("family", "tied"), CASES, ids=IDS)
def test_a_grafted_decoder_saves_reloads_and_generates_as_a_stock_model(family, tied, tmp_path):
    model = make(family, tied)
    heads, neurons = torch.rand(LAYERS, KV_HEADS), torch.rand(LAYERS, FFN)
    student, manifest = graft_model(model, layers=2, head_scores=heads, neuron_scores=neurons)
    student.save_pretrained(tmp_path)
    manifest.save(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = token_ids()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, student(ids).logits)
        assert torch.equal(replay(model, Manifest.load(tmp_path))(ids).logits,
                           student(ids).logits)
    config = reloaded.config
    assert (config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
            config.tie_word_embeddings) == (2, KV_HEADS, HEAD_DIM, tied)
    assert len(getattr(config, "layer_types", None) or [None, None]) == 2
    attn = reloaded.model.layers[1].self_attn
    assert attn.q_proj.weight.shape == (HEADS * HEAD_DIM, 32)
    assert attn.k_proj.weight.shape == (KV_HEADS * HEAD_DIM, 32)
    assert attn.o_proj.weight.shape == (32, HEADS * HEAD_DIM)
    assert reloaded.model.layers[1].mlp.down_proj.weight.shape == (32, FFN)
    assert (reloaded.lm_head.weight.data_ptr()
            == reloaded.model.embed_tokens.weight.data_ptr()) == tied
    assert num_heads(config) == KV_HEADS and model.config.num_hidden_layers == LAYERS  # untouched
    prompt = token_ids(rows=1, length=4)
    out = reloaded.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5,
                            do_sample=False, eos_token_id=None)
    assert out.shape == (1, 9) and torch.equal(out[:, :4], prompt)
    assert torch.equal(out, student.generate(prompt, attention_mask=torch.ones_like(prompt),
                                             max_new_tokens=5, do_sample=False,
                                             eos_token_id=None))


def test_sliding_window_layer_types_follow_their_layers(tmp_path):
    model = make("qwen2")  # layers 0, 1 full attention; 2, 3 sliding
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    student = apply_recipes(model, [keep_recipe(1, KV_HEADS, FFN), keep_recipe(2, KV_HEADS, FFN),
                                    keep_recipe(3, KV_HEADS, FFN)])
    assert student.config.layer_types == ["full_attention"] + ["sliding_attention"] * 2
    assert student.config.max_window_layers == 1
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.layer_types == student.config.layer_types


def test_a_plan_that_merges_full_and_sliding_layers_is_refused():
    model = make("qwen2")
    heads, neurons = torch.rand(LAYERS, KV_HEADS), torch.rand(LAYERS, FFN)
    with pytest.raises(LayergraftError, match=r"layers 1-2 of this qwen2 model have different "
                                              r"layer_types \(full_attention, sliding_attention\)"):
        graft_model(model, plan=Plan.from_spans(LAYERS, "1-2"), head_scores=heads,
                    neuron_scores=neurons)


def test_decoder_surgery_leaves_the_teacher_untouched():
    model = make("qwen3")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    apply_recipes(model, [_mixed_recipe("llama", 0, 1), _mixed_recipe("qwen3", 2, 3)])
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
