"""The decoder LLM baselines (ShortGPT, Gromov's angular block, SLEB, LaCo, LLM-Streamline,
drop-last) on tiny random Llama and Qwen2 models, each checked against its paper's rule
computed here independently (forward hooks on the teacher, layers skipped by hooks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_decoders import LAYERS, token_ids
from tiny_decoders import tiny_decoder as make
from transformers import AutoModelForCausalLM

from layergraft.errors import LayergraftError
from layergraft.scoring.block_scores import measure_blocks
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest, replay
from layergraft.surgery.methods import get_method
from layergraft.surgery.plan import Plan
from layergraft.training.distill import LiveTeacher
from layergraft.training.heal import HealLoss, healable

FAMILIES = ("llama", "qwen2")
BASELINES = ("shortgpt", "angular", "sleb", "laco", "streamline", "drop-last")


def _batches() -> list[dict[str, torch.Tensor]]:
    """Two calibration batches, one with a right-padded row (padding counts nowhere)."""
    ids = token_ids(rows=3, length=12, seed=1)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    more = token_ids(rows=2, length=12, seed=2)
    return [{"input_ids": ids, "attention_mask": mask},
            {"input_ids": more, "attention_mask": torch.ones_like(more)}]


def _residual(model, batch) -> list[torch.Tensor]:
    """x_0 (the embeddings) and every layer's output, by forward hooks on the layers."""
    outputs = []
    handles = [layer.register_forward_hook(
        lambda module, args, output: outputs.append(output[0] if isinstance(output, tuple)
                                                    else output))
        for layer in model.model.layers]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return [model.model.embed_tokens(batch["input_ids"]).detach(), *outputs]


def _mean_cosine(model, start: int, end: int) -> float:
    """Mean over real tokens of cos(x_start, x_end)."""
    total, count = 0.0, 0
    for batch in _batches():
        states, mask = _residual(model, batch), batch["attention_mask"].bool()
        total += float(F.cosine_similarity(states[start][mask], states[end][mask], dim=-1).sum())
        count += int(mask.sum())
    return total / count


def _last_token_angle(model, start: int, end: int) -> float:
    """Mean over rows of arccos(cos) / pi at each row's last real token (right padding)."""
    angles = []
    for batch in _batches():
        states = _residual(model, batch)
        last = batch["attention_mask"].sum(1) - 1
        rows = torch.arange(len(last))
        cos = F.cosine_similarity(states[start][rows, last], states[end][rows, last], dim=-1)
        angles.append(torch.arccos(cos.clamp(-1, 1)) / torch.pi)
    return float(torch.cat(angles).mean())


def _nll_without(model, skipped: set[int]) -> float:
    """The teacher's mean next-token loss with `skipped` layers made the identity by hooks."""
    def identity(module, args, kwargs, output):
        return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handles = [model.model.layers[layer].register_forward_hook(identity, with_kwargs=True)
               for layer in skipped]
    total, count = 0.0, 0
    try:
        for batch in _batches():
            with torch.no_grad():
                logits = model(**batch).logits
            ids, mask = batch["input_ids"], batch["attention_mask"].bool()
            scored = mask[:, :-1] & mask[:, 1:]
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            total += float(nll[scored].sum())
            count += int(scored.sum())
    finally:
        for handle in handles:
            handle.remove()
    return total / count


def _dropped(manifest) -> list[int]:
    kept = [recipe.sources[0] for recipe in manifest.steps[-1].recipes]
    return [layer for layer in range(LAYERS) if layer not in kept]


@pytest.fixture(scope="module", params=FAMILIES)
def teacher(request):
    model = make(request.param)
    return model, measure_blocks(model, _batches())


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_gives_the_asked_depth_and_a_standard_model(teacher, method, tmp_path):
    model, blocks = teacher
    student, manifest = graft_model(model, layers=2, method=method, blocks=blocks)
    assert student.config.num_hidden_layers == len(student.model.layers) == 2
    assert manifest.steps[-1].method == method and len(manifest.steps[-1].recipes) == 2
    student.save_pretrained(tmp_path)
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path).steps[-1].recipes == manifest.steps[-1].recipes
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    ids = token_ids()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, student(ids).logits, atol=1e-5)
        assert torch.allclose(replay(model, manifest)(ids).logits, student(ids).logits,
                              atol=1e-5)


@pytest.mark.parametrize("layers", [2, 3])
def test_shortgpt_drops_the_layers_of_lowest_block_influence(teacher, layers):
    model, blocks = teacher
    influence = [1 - _mean_cosine(model, layer, layer + 1) for layer in range(LAYERS)]
    assert blocks.record()["block_influence"] == pytest.approx(influence, abs=1e-5)
    _, manifest = graft_model(model, layers=layers, method="shortgpt", blocks=blocks)
    expected = sorted(sorted(range(LAYERS), key=influence.__getitem__)[:LAYERS - layers])
    assert _dropped(manifest) == expected
    assert manifest.steps[-1].importance["block_influence"] == blocks.record()["block_influence"]


@pytest.mark.parametrize("layers", [2, 3])
def test_angular_drops_the_contiguous_block_of_least_last_token_distance(teacher, layers):
    model, blocks = teacher
    n = LAYERS - layers
    distance = [_last_token_angle(model, start, start + n) for start in range(LAYERS - n + 1)]
    start = min(range(len(distance)), key=distance.__getitem__)
    _, manifest = graft_model(model, layers=layers, method="angular", blocks=blocks)
    assert _dropped(manifest) == list(range(start, start + n))


def test_sleb_removes_the_layer_of_least_nll_and_re_measures_after_each_removal(teacher):
    model, blocks = teacher
    single = [_nll_without(model, {layer}) for layer in range(LAYERS)]
    first = min(range(LAYERS), key=single.__getitem__)
    _, one = graft_model(model, layers=3, method="sleb", blocks=blocks)
    assert _dropped(one) == [first]
    rest = [layer for layer in range(LAYERS) if layer != first]
    second = min(rest, key=lambda layer: _nll_without(model, {first, layer}))
    _, two = graft_model(model, layers=2, method="sleb", blocks=blocks)
    assert _dropped(two) == sorted({first, second})


def _folded(layer) -> dict[str, torch.Tensor]:
    """A layer's state with its RMSNorms folded into the linears they feed (W diag(w))."""
    state = {name: tensor.detach().clone() for name, tensor in layer.state_dict().items()}
    for norm, paths in (("input_layernorm", ("q_proj", "k_proj", "v_proj")),
                        ("post_attention_layernorm", ("gate_proj", "up_proj"))):
        weight = state[f"{norm}.weight"]
        for path in paths:
            name = next(key for key in state if key.endswith(f"{path}.weight"))
            state[name] = state[name] * weight
        state[f"{norm}.weight"] = torch.ones_like(weight)
    return state


@pytest.mark.parametrize("family", FAMILIES)
def test_laco_merges_a_span_into_its_first_layer_plus_the_differences(family):
    """(1 - m) theta_l + sum_k theta_{l+k}, exactly, q/k/v biases (Qwen2) included; over the
    folded weights, which with unit norms are the raw ones."""
    model = make(family, **({"use_sliding_window": False} if family == "qwen2" else {}))
    student, manifest = graft_model(model, plan=Plan.from_spans(LAYERS, "1-3"), method="laco")
    assert student.config.num_hidden_layers == 2
    assert manifest.steps[-1].recipes[1].mix == {1: -1.0, 2: 1.0, 3: 1.0}
    sources = [_folded(model.model.layers[layer]) for layer in (1, 2, 3)]
    merged = student.model.layers[1].state_dict()
    for name, tensor in merged.items():
        expected = (1 - 2) * sources[0][name] + sources[1][name] + sources[2][name]
        if name.endswith("layernorm.weight"):
            expected = torch.ones_like(tensor)
        assert torch.equal(tensor, expected), name
    assert all(torch.equal(a, b) for a, b in zip(student.model.layers[0].state_dict().values(),
                                                  model.model.layers[0].state_dict().values(),
                                                  strict=True))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layernorm.weight"):
                parameter.fill_(1.0)
    raw, _ = graft_model(model, plan=Plan.from_spans(LAYERS, "0-2"), method="laco")
    layers = [dict(model.model.layers[layer].named_parameters()) for layer in (0, 1, 2)]
    for name, parameter in raw.model.layers[0].named_parameters():
        expected = -layers[0][name] + layers[1][name] + layers[2][name]
        if name.endswith("layernorm.weight"):
            expected = torch.ones_like(parameter)
        assert torch.equal(parameter, expected), name


def test_lacos_own_plan_takes_the_merge_whose_outputs_stay_most_similar(teacher):
    model, blocks = teacher
    step = graft_model(model, layers=3, method="laco", blocks=blocks)[1].steps[-1]
    candidates = [Plan.from_spans(LAYERS, f"{i}-{i + 1}") for i in range(LAYERS - 1)]
    scores = []
    for plan in candidates:
        try:
            merged, _ = graft_model(model, plan=plan, method="laco")
        except LayergraftError:  # Qwen2: layers 1 and 2 differ in attention type
            scores.append(-2.0)
            continue
        similarity = []
        for batch in _batches():
            mask = batch["attention_mask"].bool()
            with torch.no_grad():
                ours = merged.model(**batch).last_hidden_state[mask]
                theirs = model.model(**batch).last_hidden_state[mask]
            similarity.append(F.cosine_similarity(ours, theirs, dim=-1))
        scores.append(float(torch.cat(similarity).mean()))
    best = max(range(len(scores)), key=scores.__getitem__)
    assert step.plan == candidates[best].to_dict()


@pytest.mark.parametrize("layers", [2, 3])
def test_streamline_replaces_the_most_similar_span_by_a_copy_of_its_last_layer(teacher, layers):
    model, blocks = teacher
    m = LAYERS - layers + 1
    similarity = [_mean_cosine(model, start, start + m) for start in range(LAYERS - m + 1)]
    start = max(range(len(similarity)), key=similarity.__getitem__)
    student, manifest = graft_model(model, layers=layers, method="streamline", blocks=blocks)
    step = manifest.steps[-1]
    assert tuple(range(start, start + m)) in Plan.from_dict(step.plan).groups
    assert [r.sources[0] for r in step.recipes][start] == start + m - 1
    copy, source = student.model.layers[start], model.model.layers[start + m - 1]
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(),
                                                  source.state_dict().values(), strict=True))


def test_drop_last_is_drop_top_under_another_name(teacher):
    model, blocks = teacher
    assert get_method("drop-last") is get_method("drop-top")
    last = graft_model(model, layers=3, method="drop-last")[1].steps[-1]
    top = graft_model(model, layers=3, method="drop-top")[1].steps[-1]
    assert last.recipes == top.recipes and last.plan == top.plan
    assert _dropped(graft_model(model, layers=2, method="drop-last")[1]) == [2, 3]


@pytest.mark.parametrize("method", ["shortgpt", "angular", "sleb", "streamline", "laco"])
def test_a_baseline_without_its_evidence_or_given_a_plan_is_refused_in_one_line(method):
    model = make("llama")
    with pytest.raises(LayergraftError, match="calibration text") as error:
        graft_model(model, layers=2, method=method)
    assert "\n" not in str(error.value)
    if method != "laco":
        blocks = measure_blocks(model, _batches())
        with pytest.raises(LayergraftError, match="chooses its own layers"):
            graft_model(model, plan=Plan.from_spans(LAYERS, "0-1,2-3"), method=method,
                        blocks=blocks)


@pytest.mark.parametrize("layers", [2, 3])
def test_healing_trains_the_streamline_layer_to_its_span_end_on_a_live_decoder(layers):
    """The replacement layer fed the teacher state at its span's start learns the span's end
    (after the final norm where the span ends the model, as the teacher's last state has);
    the heal loss is the span-end MSE of the student's own forward, whose earlier layers are
    copies, and falls with a few steps."""
    model = make("llama")
    student, manifest = graft_model(model, layers=layers, method="streamline",
                                    blocks=measure_blocks(model, _batches()))
    ends = manifest.steps[-1].span_ends()
    (k,) = healable(ends)
    loss = HealLoss(LiveTeacher(model), ends, [k])
    batch = _batches()[0]
    mask = batch["attention_mask"].bool()
    target = _residual(model, batch)[ends[k]]
    output = _residual(student, batch)[k + 1]
    with torch.no_grad():
        if ends[k] == LAYERS:  # on these models the most similar span always ends the model
            target, output = model.model.norm(target), student.model.norm(output)
        per_example = [((output[i][mask[i]] - target[i][mask[i]]) ** 2).mean()
                       for i in range(3)]
        before = float(loss(student, batch))
    assert before == pytest.approx(float(torch.stack(per_example).mean()), rel=1e-5)
    optimizer = torch.optim.Adam(loss.freeze_others(student), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        loss(student, batch).backward()
        optimizer.step()
    with torch.no_grad():
        assert float(loss(student, batch)) < 0.7 * before
