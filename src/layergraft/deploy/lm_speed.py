"""Tokens per second of a causal LM, teacher beside student, for prefill and for decode.

A generation has two costs that shrink differently with depth: the prefill (one forward pass
over the prompt, filling the KV cache) and the decode (one pass per new token, reading the
cache). Both are timed in one run by `layergraft.pipeline.bench.measure_speed`, which gives
every runner the same batches (random ids of `prompt_tokens`, no padding), the same threads,
warm-up, and interleaves all four runners (teacher and student, prefill and decode) in a
rotating order within every repeat, so load from other processes hits them alike. The ratio
is the median over repeats of teacher time / student time, prefill against prefill and
decode against decode, set beside the ideal ratio, teacher layers / student layers.

Both tokens/s figures of a phase come from that median repeat (the lower middle one for an
even count), so student tokens/s over teacher tokens/s is the ratio exactly. Medians of each
model's own times would not agree with it: when the load changes during a run, the two
medians fall in different repeats (a SmolLM2 30->22 run recorded the teacher's prefill
faster while its per-repeat ratio said the student was 1.5x faster).

Prefill computes the logits of the last position only, as `generate` does: the LM head over
every prompt position is work no generation does. Decode is greedy, `new_tokens` steps after
the prefill, with the clock around the steps alone (the prefill that fills their cache runs
untimed before them).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel

from layergraft.data.encoding import usable_positions
from layergraft.deploy.backends import TorchRunner
from layergraft.errors import LayergraftError
from layergraft.runtime import Runtime

PHASES = ("prefill", "decode")


class PrefillRunner(TorchRunner):
    """One forward pass over each prompt batch, filling a KV cache, last logits only."""

    def timed(self, prepared) -> float:
        with torch.inference_mode(), self.runtime.autocast():
            self.runtime.synchronize()
            start = time.perf_counter()
            for batch in prepared:
                self.model(**batch, use_cache=True, logits_to_keep=1)
            self.runtime.synchronize()
            return time.perf_counter() - start


class DecodeRunner(TorchRunner):
    """`new_tokens` greedy decode steps after each batch's (untimed) prefill."""

    def __init__(self, model: PreTrainedModel, runtime: Runtime, new_tokens: int) -> None:
        super().__init__("decode", model, runtime)
        self.new_tokens = new_tokens

    def timed(self, prepared) -> float:
        seconds = 0.0
        # transformers 5.25 renamed `past_key_values` to `cache` (the old name warns)
        name = ("cache" if "cache" in inspect.signature(self.model.forward).parameters
                else "past_key_values")
        with torch.inference_mode(), self.runtime.autocast():
            for batch in prepared:
                out = self.model(**batch, use_cache=True, logits_to_keep=1)
                mask = batch["attention_mask"]
                self.runtime.synchronize()
                start = time.perf_counter()
                for _ in range(self.new_tokens):
                    mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
                    out = self.model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=mask,
                                     use_cache=True, **{name: out[name]})
                self.runtime.synchronize()
                seconds += time.perf_counter() - start
        return seconds


def lm_speed(teacher: PreTrainedModel, student: PreTrainedModel, *, measure_speed: Callable,
             prompt_tokens: int = 128,
             new_tokens: int = 32, batch_size: int = 1, batches: int = 2, repeats: int = 5,
             warmup: int = 1, precision: str = "fp32", threads: int | None = None,
             seed: int = 0) -> dict:
    """Prefill and decode tokens per second of both, student / teacher ratios, the ideal
    ratio and the settings: one record (`rows` holds measure_speed's records). The timer is
    `layergraft.pipeline.bench.measure_speed`, handed in by the pipeline above this layer."""
    if prompt_tokens < 1 or new_tokens < 1:
        raise LayergraftError("prompt and new tokens must be at least 1 each")
    for name, model in (("teacher", teacher), ("student", student)):
        limit = usable_positions(model.config)
        if limit is not None and prompt_tokens + new_tokens > limit:
            raise LayergraftError(f"{prompt_tokens} prompt + {new_tokens} new tokens are more "
                                  f"than the {name} takes ({limit} positions)")
    models = {"teacher": teacher, "student": student}
    runtime = Runtime(teacher.device, precision)
    runners = {}
    for name, model in models.items():
        runners[name, "prefill"] = PrefillRunner("prefill", model, runtime)
        runners[name, "decode"] = DecodeRunner(model, runtime, new_tokens)
    rows = measure_speed(models, [prompt_tokens] * (batch_size * batches),
                         batch_sizes=(batch_size,), repeats=repeats, warmup=warmup,
                         threads=threads, examples_per_repeat=batch_size * batches,
                         precision=precision, seed=seed, runners=runners)
    by = {(row["model"], row["backend"]): row for row in rows}
    examples = by["teacher", "prefill"]["examples_per_repeat"]
    per_repeat = {"prefill": prompt_tokens * examples, "decode": new_tokens * examples}
    ideal = by["student", "prefill"]["ideal_ratio"]
    record: dict = {}
    for phase in PHASES:
        phase_record = phase_speed(by["teacher", phase]["repeat_seconds"],
                                   by["student", phase]["repeat_seconds"], per_repeat[phase])
        record[f"{phase}_tokens_per_second"] = phase_record["tokens_per_second"]
        record[f"{phase}_ratio"] = phase_record["ratio"]
        record[f"{phase}_of_ideal"] = phase_record["ratio"] / ideal if ideal else None
        record[f"{phase}_median_repeat"] = phase_record["repeat"]
    return {**record, "ideal_ratio": ideal, "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens, "batch_size": batch_size, "batches": batches,
            "repeats": repeats, "threads": by["student", "decode"]["threads"],
            **runtime.record(), "rows": rows}


def phase_speed(teacher_seconds: Sequence[float], student_seconds: Sequence[float],
                tokens_per_repeat: int) -> dict:
    """The median repeat of teacher time / student time, its ratio and both tokens/s.

    One repeat gives all three, so the ratio is student tokens/s over teacher tokens/s; the
    per-repeat pairing keeps what the interleaving bought (load cancels within a repeat)."""
    teacher, student = np.asarray(teacher_seconds), np.asarray(student_seconds)
    if len(teacher) != len(student) or not len(teacher):
        raise LayergraftError("teacher and student need the same, non-zero number of repeats")
    ratios = teacher / student
    repeat = int(np.argsort(ratios, kind="stable")[(len(ratios) - 1) // 2])
    return {"ratio": float(ratios[repeat]), "repeat": repeat,
            "tokens_per_second": {"teacher": tokens_per_repeat / float(teacher[repeat]),
                                  "student": tokens_per_repeat / float(student[repeat])}}
