"""Importance of a decoder's KV groups and SwiGLU neurons under the next-token loss ("lm")."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_model
from tiny_decoders import FFN, HEAD_DIM, HEADS, KV_HEADS, LAYERS, token_ids
from tiny_decoders import tiny_decoder as make
from transformers import AutoTokenizer

from layergraft.errors import LayergraftError
from layergraft.scoring.decoder_importance import next_token_losses, text_windows
from layergraft.scoring.importance import score_importance
from layergraft.surgery.graft import graft_model

GROUP = HEADS // KV_HEADS * HEAD_DIM  # o_proj input columns of one KV group


def _slope(model, ids, scale) -> float:
    """d(summed next-token loss)/d(scale of one unit's output columns), through the weights
    alone: scaling columns W[:, c] by (1 + e) moves the loss by e * sum(dL/dW[:, c] * W[:, c])."""
    weight, columns = scale
    model.zero_grad()
    next_token_losses(model(ids).logits, {"input_ids": ids}).sum().backward()
    return float((weight.grad[:, columns] * weight[:, columns]).sum().detach())


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_michel_scores_are_the_mean_abs_gradient_of_each_texts_next_token_loss(family):
    """Against the weights' own gradient: scaling a KV group's o_proj columns (all n_rep query
    heads of the group) or a neuron's down_proj column is scaling its mask."""
    model = make(family).double()
    texts = [token_ids(rows=1, length=7, seed=seed) for seed in (0, 1)]
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids in texts]
    scores = score_importance(model, batches, method="michel", loss="lm")
    assert scores.head.shape == (LAYERS, KV_HEADS) and scores.neuron.shape == (LAYERS, FFN)
    assert scores.info["loss"] == "lm" and scores.info["tokens"] == 14
    for layer, group, neuron in ((0, 1, 5), (3, 0, 17)):
        block = model.model.layers[layer]
        units = [(scores.head[layer, group], (block.self_attn.o_proj.weight,
                                              slice(group * GROUP, (group + 1) * GROUP))),
                 (scores.neuron[layer, neuron], (block.mlp.down_proj.weight, [neuron]))]
        for score, scale in units:
            expected = sum(abs(_slope(model, ids, scale)) for ids in texts) / 14
            assert float(score) == pytest.approx(expected, rel=1e-5)


def test_padding_is_neither_predicted_nor_predicting():
    model = make("llama")
    ids = token_ids(rows=1, length=6)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=ids.dtype)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], dim=1).long()
    with torch.no_grad():
        short = next_token_losses(model(ids).logits, {"input_ids": ids})
        long = next_token_losses(model(padded, attention_mask=mask).logits,
                                 {"input_ids": padded, "attention_mask": mask})
    assert torch.allclose(short, long, atol=1e-5)


def test_scores_drive_a_decoder_graft(tmp_path):
    model = make("mistral")
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}
               for ids in (token_ids(seed=0), token_ids(seed=1))]
    scores = score_importance(model, batches, loss="lm")
    student, manifest = graft_model(model, layers=2, head_scores=scores.head,
                                    neuron_scores=scores.neuron, importance_info=scores.info)
    assert student.config.num_hidden_layers == 2
    assert manifest.steps[-1].importance["loss"] == "lm"
    assert len(manifest.steps[-1].recipes[0].heads) == KV_HEADS


def test_activation_and_weight_scores_need_no_loss():
    model = make("qwen2")
    batches = [{"input_ids": token_ids(), "attention_mask": torch.ones_like(token_ids())}]
    for method in ("activation", "weight"):
        scores = score_importance(model, batches, method=method)
        assert scores.head.shape == (LAYERS, KV_HEADS) and bool((scores.head > 0).all())


def test_losses_that_do_not_fit_the_model_are_one_line_errors():
    decoder, encoder = make("llama"), make_tiny_model("bert")
    batches = [{"input_ids": token_ids(), "attention_mask": torch.ones_like(token_ids())}]
    with pytest.raises(LayergraftError, match="importance loss 'kl' scores encoders; a llama "):
        score_importance(decoder, batches, loss="kl")
    with pytest.raises(LayergraftError, match="loss 'lm' is the next-token loss of a decoder"):
        score_importance(encoder, batches, loss="lm")


def test_text_windows_cut_the_joined_texts_into_full_windows(tmp_path):
    from tiny_task import save_tiny_teacher

    tokenizer = AutoTokenizer.from_pretrained(save_tiny_teacher(tmp_path / "t", head=False))
    texts = ["good movie", "a bad film overall", "fine"] * 4
    batches = text_windows(tokenizer, texts, window=8, batch_size=2)
    assert all(b["input_ids"].shape[1] == 8 and bool(b["attention_mask"].all()) for b in batches)
    assert sum(len(b["input_ids"]) for b in batches) >= 3
    assert len(text_windows(tokenizer, texts, window=8, max_windows=1)) == 1
    with pytest.raises(LayergraftError, match="fewer than one window of 4096"):
        text_windows(tokenizer, texts, window=4096)
