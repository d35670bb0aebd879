"""LM distillation: the top-k KL with its remainder bucket, the hidden-state term, and the top-k
teacher cache on disk (keyed by teacher and blocks; it round-trips to the live targets)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_decoders import VOCAB, tiny_decoder, token_ids

from layergraft.errors import LayergraftError
from layergraft.training.lm_distill import (
    LMDistillConfig,
    LMTeacherCache,
    lm_cache_path,
    make_lm_distill_loss,
    teacher_targets,
    topk_kl,
)


def full_kl(student_logits, teacher_logits, t):
    s = F.log_softmax(student_logits / t, -1).flatten(0, 1)
    p = F.log_softmax(teacher_logits / t, -1).flatten(0, 1)
    return F.kl_div(s, p, log_target=True, reduction="batchmean") * t * t


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_with_all_but_one_token_the_topk_kl_is_the_full_kl(temperature):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, VOCAB, generator=generator) * 3
    student = torch.randn(2, 5, VOCAB, generator=generator) * 3
    values, indices = torch.topk(F.log_softmax(teacher / temperature, -1), VOCAB - 1)
    loss = topk_kl(student, values, indices, temperature)
    assert float(loss) == pytest.approx(float(full_kl(student, teacher, temperature)), rel=1e-4)


def test_the_topk_kl_is_zero_on_itself_and_grows_with_small_k_as_a_lower_bound():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(3, 4, VOCAB, generator=generator) * 2
    student = teacher + torch.randn(3, 4, VOCAB, generator=generator)
    for k in (1, 8, 50):
        values, indices = torch.topk(F.log_softmax(teacher, -1), k)
        assert float(topk_kl(teacher, values, indices, 1.0)) == pytest.approx(0.0, abs=1e-5)
        coarse = float(topk_kl(student, values, indices, 1.0))
        assert 0 <= coarse <= float(full_kl(student, teacher, 1.0)) + 1e-6


def test_the_remainder_bucket_sees_student_mass_off_the_teacher_support():
    teacher = torch.full((1, 1, VOCAB), -10.0)
    teacher[..., :4] = 5.0  # the teacher's mass sits on four tokens
    values, indices = torch.topk(F.log_softmax(teacher, -1), 4)
    student = teacher.clone()
    student[..., 50:] = 8.0  # the same shape on those four, but most mass elsewhere
    assert float(topk_kl(student, values, indices, 1.0)) > 1.0


def test_the_cache_round_trips_to_the_live_targets_and_is_reused(tmp_path):
    teacher = tiny_decoder("llama", tied=True)
    blocks = token_ids(rows=5, length=12)
    cache = LMTeacherCache.build(teacher, blocks, top_k=7, temperature=2.0, layers=(0, 2),
                                 cache_dir=tmp_path, batch_size=2, dtype=torch.float32)
    live = teacher_targets(teacher, blocks[[3, 1]], top_k=7, temperature=2.0, layers=(0, 2))
    cached = cache.targets(torch.tensor([3, 1]), layers=(0, 2))
    assert torch.equal(cached.indices, live.indices)
    assert torch.allclose(cached.log_probs, live.log_probs, atol=1e-6)
    assert all(torch.allclose(c, v, atol=1e-6) for c, v in zip(cached.hidden, live.hidden,
                                                                   strict=True))
    folder = lm_cache_path(teacher, blocks, tmp_path)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.safetensors"))
    assert [str(f) for f in files] == ["hidden-0.safetensors", "hidden-2.safetensors",
                                       "top7-T2/topk.safetensors"]
    stamp = (folder / "top7-T2" / "topk.safetensors").stat().st_mtime_ns
    again = LMTeacherCache.build(teacher, blocks, top_k=7, temperature=2.0, layers=(2,),
                                 cache_dir=tmp_path)
    assert (folder / "top7-T2" / "topk.safetensors").stat().st_mtime_ns == stamp
    assert again.temperature == 2.0 and again.log_probs.shape == (5, 12, 7)
    assert lm_cache_path(teacher, token_ids(rows=5, length=12, seed=1), tmp_path) != folder


def test_fp16_cache_keeps_the_loss_of_a_teacher_to_itself_near_zero(tmp_path):
    teacher = tiny_decoder("qwen2")
    blocks = token_ids(rows=4, length=10)
    cache = LMTeacherCache.build(teacher, blocks, top_k=16, cache_dir=tmp_path)
    assert cache.log_probs.dtype == torch.float16 and cache.indices.dtype == torch.int32
    loss_fn = make_lm_distill_loss(cache, LMDistillConfig(top_k=16))
    loss = loss_fn(teacher, {"input_ids": blocks, "example_id": torch.arange(4)})
    assert float(loss.detach()) == pytest.approx(0.0, abs=2e-3)


def test_the_loss_trains_a_student_with_hidden_states_and_matches_the_live_teacher(tmp_path):
    teacher, student = tiny_decoder("llama", seed=0), tiny_decoder("llama", seed=1)
    blocks = token_ids(rows=4, length=10)
    config = LMDistillConfig(temperature=2.0, top_k=10, hidden_weight=0.5)
    layer_map = [1, 2, 3, 4]  # each student layer imitates the same teacher layer
    cache = LMTeacherCache.build(teacher, blocks, top_k=10, temperature=2.0, layers=layer_map,
                                 cache_dir=tmp_path, dtype=torch.float32)
    inputs = {"input_ids": blocks[[2, 0]], "example_id": torch.tensor([2, 0])}
    cached = make_lm_distill_loss(cache, config, layer_map=layer_map)(student, inputs)
    live = make_lm_distill_loss(teacher, config, layer_map=layer_map)(student, inputs)
    assert float(cached.detach()) == pytest.approx(float(live.detach()), rel=1e-5)
    assert float(cached.detach()) > 0
    cached.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bad_cache_use_is_a_one_line_error(tmp_path):
    teacher = tiny_decoder("llama")
    blocks = token_ids(rows=2, length=8)
    cache = LMTeacherCache.build(teacher, blocks, top_k=4, cache_dir=tmp_path)
    with pytest.raises(LayergraftError, match="blocks the LM teacher cache was not built on"):
        cache.targets(torch.tensor([5]))
    with pytest.raises(LayergraftError, match="holds temperature 1.0, not 2.0"):
        make_lm_distill_loss(cache, LMDistillConfig(temperature=2.0))(
            teacher, {"input_ids": blocks, "example_id": torch.arange(2)})
    with pytest.raises(LayergraftError, match="needs a layer map"):
        make_lm_distill_loss(cache, LMDistillConfig(hidden_weight=1.0))
    with pytest.raises(LayergraftError, match="must be below the vocabulary size"):
        teacher_targets(teacher, blocks, top_k=VOCAB, temperature=1.0)
    with pytest.raises(LayergraftError, match="lacks topk.safetensors"):
        LMTeacherCache.load(tmp_path / "nowhere")
