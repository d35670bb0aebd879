"""Sentences per second, teacher vs student, timed interleaved in one run.

The transformers alone are timed (`layergraft.pipeline.bench.measure_speed`: same batches,
rotating order, medians over repeats) on the real token lengths of held-out texts; pooling
and normalisation cost the same for both and next to nothing. The ratio is set against the
ideal one, teacher layers / student layers.
"""

from __future__ import annotations

from collections.abc import Sequence

SPEED_BATCH = 32
SPEED_REPEATS = 5


def embedding_speed(teacher, student, texts: Sequence[str], *, measure_speed,
                    max_length: int = 128, precision: str = "fp32",
                    batch_size: int = SPEED_BATCH, repeats: int = SPEED_REPEATS) -> dict:
    """Throughput of both (sentences/s), student / teacher ratio, ideal ratio, settings;
    timed by `measure_speed` (`layergraft.pipeline.bench`'s, which the pipeline hands in)."""
    from layergraft.embeddings.heal import encoded_texts
    from layergraft.embeddings.model import transformer_of

    lengths = [len(ids) for ids in encoded_texts(teacher[0].tokenizer, texts,
                                                 max_length)["input_ids"]]
    rows = measure_speed({"teacher": transformer_of(teacher), "student": transformer_of(student)},
                         lengths, batch_sizes=(batch_size,), repeats=repeats,
                         precision=precision)
    by_name = {row["model"]: row for row in rows}
    ratio, ideal = by_name["student"]["throughput_ratio"], by_name["student"]["ideal_ratio"]
    return {"sentences_per_second": {name: row["throughput"] for name, row in by_name.items()},
            "ratio": ratio, "ideal_ratio": ideal, "of_ideal": ratio / ideal,
            "batch_size": batch_size, "repeats": repeats, "texts": len(lengths),
            "mean_length": by_name["student"]["mean_length"],
            "threads": by_name["student"]["threads"], "precision": precision}
