"""The language-model loss of importance scoring: KV groups and neurons of a decoder LLM.

`score_importance(model, batches, loss="lm")` scores a Llama-family model with the same mask
hooks as an encoder: the ArchSpec makes a decoder's attention unit a KV group (one mask over
the group's n_rep query heads at the o_proj input) and its FFN unit a SwiGLU neuron (the
down_proj input), so Michel's |dL/dξ| and the Fisher come out as [layers, KV groups] and
[layers, intermediate]. L is each text's next-token loss, summed over its real tokens: what a
unit costs the model at its own job, with no labels and no teacher. Classifier losses do not
fit a decoder ("kl" would need one backward pass per vocabulary entry), nor "lm" an encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ArchSpec


def check_loss_fits(spec: ArchSpec, loss: str, needs: str = "gradients") -> None:
    """One line of error for an importance loss the model's kind cannot take (the loss only
    matters to a scorer that `needs` gradients)."""
    if needs != "gradients":
        return
    if spec.decoder and loss != "lm":
        raise LayergraftError(f"importance loss '{loss}' scores encoders; a {spec.model_type} "
                              "language model is scored with loss 'lm' (next-token loss)")
    if loss == "lm" and not spec.decoder:
        raise LayergraftError(f"importance loss 'lm' is the next-token loss of a decoder LLM; "
                              f"score a {spec.model_type} model with task, kl or embedding")


def next_token_losses(logits: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each row's summed next-token cross-entropy [batch] over the positions whose token and
    next token are both real (padding, on either side, predicts and is predicted nothing)."""
    ids = inputs["input_ids"]
    real = inputs.get("attention_mask", torch.ones_like(ids)).bool()
    scored = real[:, :-1] & real[:, 1:]
    wide = logits[:, :-1].flatten(0, 1)  # at least float32, whatever the model runs in
    nll = F.cross_entropy(wide.to(torch.promote_types(wide.dtype, torch.float32)),
                          ids[:, 1:].flatten(), reduction="none").view(scored.shape)
    return (nll * scored).sum(1)


def text_windows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, window: int = 128,
                 batch_size: int = 8, max_windows: int | None = None
                 ) -> list[dict[str, torch.Tensor]]:
    """Calibration batches for `score_importance(..., loss="lm")`: the texts' tokens, joined
    with the EOS token between texts, cut into full windows of `window` tokens (no padding)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream = [token for text in texts for token in [*tokenizer(text)["input_ids"], *eos]]
    count = len(stream) // window
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise LayergraftError(f"the calibration text has {len(stream)} tokens, fewer than one "
                              f"window of {window}: give more text or a smaller window")
    ids = torch.tensor(stream[:count * window]).view(count, window)
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
            for chunk in ids.split(batch_size)]
