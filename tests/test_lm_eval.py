"""LM evaluation on tiny random decoders: perplexity over non-overlapping windows, KL and top-1
agreement with a teacher, greedy continuations, the local lm-eval task and the speed record."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_decoders import VOCAB, tiny_decoder
from tiny_lm import tiny_char_tokenizer

from layergraft.data.lm_text import eval_windows, load_texts, token_stream
from layergraft.scoring.lm_harness import harness_scores, sentiment_examples
from layergraft.scoring.lm_quality import greedy_continuations, lm_fidelity, perplexity


def windows_of(rows: int = 5, window: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    stream = torch.randint(3, VOCAB, (rows * window + 7,), generator=generator)
    return eval_windows(stream, window)


def test_perplexity_is_exp_of_the_mean_next_token_loss_over_every_window():
    model, windows = tiny_decoder("llama"), windows_of()
    record = perplexity(model, windows, batch_size=2)
    with torch.no_grad():  # each window scored alone: HF's own shifted loss, window by window
        losses = [model(input_ids=w[None], labels=w[None]).loss for w in windows]
    assert record["nll"] == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
    assert record["perplexity"] == pytest.approx(math.exp(record["nll"]), rel=1e-9)
    assert (record["window"], record["windows"], record["tokens"]) == (12, 5, 5 * 11)


def test_windows_are_scored_independently_with_no_context_carried_over():
    model, windows = tiny_decoder("qwen3"), windows_of()
    whole = perplexity(model, windows)["nll"] * windows.shape[0]
    parts = sum(perplexity(model, w[None])["nll"] for w in windows)
    assert whole == pytest.approx(parts, rel=1e-5)


def test_a_model_has_kl_zero_and_full_agreement_with_itself():
    model, windows = tiny_decoder("llama", tied=True), windows_of()
    record = lm_fidelity(model, model, windows, batch_size=3)
    assert record["kl"] == pytest.approx(0.0, abs=1e-6)
    assert record["agreement"] == 1.0 and record["perplexity_ratio"] == pytest.approx(1.0)
    assert record["teacher_perplexity"] == pytest.approx(perplexity(model, windows)["perplexity"])


def test_kl_and_agreement_to_another_model_match_a_direct_computation():
    teacher, student = tiny_decoder("llama", seed=0), tiny_decoder("llama", seed=1)
    windows = windows_of(3)
    record = lm_fidelity(teacher, student, windows)
    with torch.no_grad():
        t = F.log_softmax(teacher(windows).logits[:, :-1], -1)
        s = F.log_softmax(student(windows).logits[:, :-1], -1)
    kl = F.kl_div(s.flatten(0, 1), t.flatten(0, 1), log_target=True, reduction="batchmean")
    assert record["kl"] == pytest.approx(float(kl), rel=1e-4) and record["kl"] > 0
    assert record["agreement"] == pytest.approx(float((t.argmax(-1) == s.argmax(-1))
                                                      .float().mean()))
    assert record["student_perplexity"] == pytest.approx(perplexity(student, windows)
                                                         ["perplexity"], rel=1e-5)


def test_real_text_scores_through_the_stream_and_windows_of_a_stated_size():
    tokenizer = tiny_char_tokenizer()
    stream = token_stream(tokenizer, load_texts("editorials-text").documents("test")[:40])
    windows = eval_windows(stream, max_positions=64)
    record = perplexity(tiny_decoder("mistral"), windows)
    assert record["window"] == 64 and record["windows"] == len(stream) // 64
    assert math.isfinite(record["perplexity"])


def test_greedy_continuations_put_teacher_beside_student():
    tokenizer = tiny_char_tokenizer()
    teacher, student = tiny_decoder("llama", seed=0), tiny_decoder("llama", seed=1)
    same = greedy_continuations(teacher, teacher, tokenizer, ["the movie", "a"],
                                max_new_tokens=6)
    assert [r["prompt"] for r in same] == ["the movie", "a"]
    assert all(r["teacher"] == r["student"] and r["agreeing_tokens"] == 6 for r in same)
    other = greedy_continuations(teacher, student, tokenizer, ["the movie"], max_new_tokens=6)
    assert 0 <= other[0]["agreeing_tokens"] <= 6 and isinstance(other[0]["student"], str)


def test_the_sentiment_task_is_balanced_held_out_and_fixed():
    examples = sentiment_examples("movies", per_class=30)
    assert len(examples) == 60 and sum(e["label"] for e in examples) == 30
    assert examples == sentiment_examples("movies", per_class=30)
    from layergraft.data import movies
    assert {movies.split_of(e["id"]) for e in examples} == {"test"}


def test_lm_eval_scores_the_local_task_offline(monkeypatch, tmp_path):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tokenizer = tiny_char_tokenizer()
    # 64 positions: lm-eval cuts each prompt from the left to fit, as for any short model
    models = {"teacher": tiny_decoder("llama", seed=0), "student": tiny_decoder("llama", seed=1)}
    records = harness_scores(models, tokenizer, per_class=8, batch_size=8, folder=tmp_path)
    for record in records.values():
        assert record["examples"] == 16 and record["num_fewshot"] == 0
        assert 0.0 <= record["acc"] <= 1.0 and 0.0 <= record["acc_norm"] <= 1.0
    assert (tmp_path / "layergraft_movies_sentiment.yaml").is_file()


def test_lm_speed_times_prefill_and_decode_of_both_in_one_run():
    from layergraft.pipeline.lm_speed import lm_speed

    teacher, student = tiny_decoder("llama"), tiny_decoder("llama")
    student.model.layers = student.model.layers[:2]  # the first two layers: a 2-layer student
    student.config.num_hidden_layers = 2
    record = lm_speed(teacher, student, prompt_tokens=16, new_tokens=4, repeats=2, warmup=0)
    assert record["ideal_ratio"] == 2.0
    for phase in ("prefill", "decode"):
        assert set(record[f"{phase}_tokens_per_second"]) == {"teacher", "student"}
        assert record[f"{phase}_ratio"] > 0
    rows = record["rows"]
    assert {(r["model"], r["backend"]) for r in rows} == {
        (m, p) for m in ("teacher", "student") for p in ("prefill", "decode")}
    assert all(len(r["repeat_seconds"]) == 2 for r in rows)
