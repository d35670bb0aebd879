"""How well a causal LM models held-out text, and how close a student stays to its teacher.

Perplexity protocols differ by 2x between papers (DESIGN.md section 14), so every record says
its protocol: the text is cut into non-overlapping windows of `window` tokens
(`layergraft.data.lm_text.eval_windows`), each window is scored on its own with no context
from the one before, and every position but the first predicts the next token, so a record of
n windows scores n * (window - 1) tokens. Perplexity is exp of the mean next-token negative
log-likelihood over those tokens. KL(teacher || student) and top-1 agreement (the student's
argmax is the teacher's) are averaged over the very same positions, in one pass of both
models per batch, so the three numbers describe the same predictions.

Measured with SmolLM2-135M-Instruct (fp32, windows of 1,024): perplexity 70.6 on movie-text
dev and 71.3 on its test (26 windows, 26,598 tokens each), 48.6 on the first 4 windows of
editorials-text; one window costs about 4 s a model on one CPU core.

Greedy continuations of fixed prompts show in words what the numbers summarise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

PROMPTS = (
    "The movie was",
    "I did not expect the ending of this film to",
    "The best thing about the acting is",
    "The editorial board believes that the city",
)


def perplexity(model: PreTrainedModel, windows: torch.Tensor, *, batch_size: int = 1) -> dict:
    """Perplexity of `model` on evaluation windows [n, window] -> a record of its protocol."""
    nll = 0.0
    for ids in _batches(windows, batch_size, model):
        log_probs = _next_token_log_probs(model, ids)
        nll += -float(log_probs.gather(-1, ids[:, 1:, None]).sum(dtype=torch.float64))
    return {**_protocol(windows), **_scores(nll / _scored(windows))}


def lm_fidelity(teacher: PreTrainedModel, student: PreTrainedModel, windows: torch.Tensor, *,
                batch_size: int = 1) -> dict:
    """Teacher and student perplexity side by side, with KL(teacher || student) in nats per
    token and top-1 next-token agreement over the same positions -> one record."""
    sums = dict.fromkeys(("teacher", "student", "kl", "agree"), 0.0)
    for ids in _batches(windows, batch_size, teacher):
        t, s = _next_token_log_probs(teacher, ids), _next_token_log_probs(student, ids)
        targets = ids[:, 1:, None]
        sums["teacher"] -= float(t.gather(-1, targets).sum(dtype=torch.float64))
        sums["student"] -= float(s.gather(-1, targets).sum(dtype=torch.float64))
        sums["kl"] += float((t.exp() * (t - s)).sum(dtype=torch.float64))
        sums["agree"] += float((t.argmax(-1) == s.argmax(-1)).sum())
    tokens = _scored(windows)
    teacher_scores = _scores(sums["teacher"] / tokens)
    student_scores = _scores(sums["student"] / tokens)
    return {**_protocol(windows),
            **{f"teacher_{k}": v for k, v in teacher_scores.items()},
            **{f"student_{k}": v for k, v in student_scores.items()},
            "perplexity_ratio": student_scores["perplexity"] / teacher_scores["perplexity"],
            "kl": sums["kl"] / tokens, "agreement": sums["agree"] / tokens}


def greedy_continuations(teacher: PreTrainedModel, student: PreTrainedModel,
                         tokenizer: PreTrainedTokenizerBase,
                         prompts: Sequence[str] = PROMPTS, *, max_new_tokens: int = 24
                         ) -> list[dict]:
    """Each prompt's greedy continuation by teacher and by student, and how many of their
    first new tokens agree: one record a prompt."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=(tokenizer.pad_token_id if tokenizer.pad_token_id
                                            is not None else tokenizer.eos_token_id))
    records = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt").to(teacher.device)
        new = {name: _generate(model, inputs, config)
               for name, model in (("teacher", teacher), ("student", student))}
        same = next((i for i, (a, b) in enumerate(zip(new["teacher"], new["student"],
                                                      strict=False)) if a != b),
                    min(len(new["teacher"]), len(new["student"])))
        records.append({"prompt": prompt,
                        **{name: tokenizer.decode(ids, skip_special_tokens=True)
                           for name, ids in new.items()},
                        "agreeing_tokens": same, "max_new_tokens": max_new_tokens})
    return records


def _generate(model: PreTrainedModel, inputs, config: GenerationConfig) -> list[int]:
    with torch.inference_mode():
        out = model.eval().generate(**inputs, generation_config=config)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _batches(windows: torch.Tensor, batch_size: int, model: PreTrainedModel
             ) -> Iterator[torch.Tensor]:
    model.eval()
    for ids in windows.split(max(1, batch_size)):
        yield ids.to(model.device)


def _next_token_log_probs(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position but the last [B, window - 1, vocab], float32."""
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    return F.log_softmax(logits.float(), dim=-1)


def _scored(windows: torch.Tensor) -> int:
    return windows.shape[0] * (windows.shape[1] - 1)


def _protocol(windows: torch.Tensor) -> dict:
    return {"window": int(windows.shape[1]), "windows": int(windows.shape[0]),
            "tokens": _scored(windows), "protocol": "non-overlapping windows, no carried context"}


def _scores(nll: float) -> dict:
    return {"nll": nll, "perplexity": math.exp(nll)}
