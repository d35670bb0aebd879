"""`compress_embedding`: `layergraft.pipeline.compress.compress(objective="embedding")` under
the name the benchmarks call (the run itself: `layergraft.objectives.embedding`)."""

from __future__ import annotations

import os


def compress_embedding(teacher: str, *, layers: int, out: str | os.PathLike,
                       texts: str | os.PathLike | None = None, task=None, **options) -> dict:
    """Compress the sentence-transformers model `teacher` to `layers` layers into `out`
    (options: `layergraft.objectives.embedding.EmbeddingObjective.run`)."""
    from layergraft.pipeline.compress import compress

    return compress(teacher, task, layers=layers, out_dir=out, objective="embedding",
                    texts=texts, **options)
