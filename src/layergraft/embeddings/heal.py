"""Local healing of a grafted sentence encoder, by `layergraft.training.heal` unchanged.

Each new layer of the student's transformer learns to map the teacher transformer's hidden
state at the start of its span to the state at its end, on the training texts (the
teacher's states cached once, as for classifiers). The cost is charged against the run's
distillation budget by heal.py's rule, so a healed run trains that many fewer steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from layergraft.training.heal import HealConfig


def encoded_texts(tokenizer, texts: Sequence[str], max_length: int = 128):
    """The texts as an encoded split (token columns and `example_id`), unpadded."""
    import datasets

    from layergraft.data.encoding import token_limit

    columns = dict(tokenizer(list(texts), truncation=True,
                             max_length=token_limit(tokenizer, max_length)))
    return datasets.Dataset.from_dict({**columns, "example_id": list(range(len(texts)))})


def heal_embedding(student, teacher, texts: Sequence[str], manifest, config: HealConfig, *,
                   runtime, train_batch: int, max_length: int = 128, cache_dir=None,
                   seed: int = 0) -> dict:
    """Heal the student's transformer in place; heal.py's record plus its `charge` in
    distillation steps of `train_batch` texts."""
    from layergraft.embeddings.model import transformer_of
    from layergraft.training.heal import heal, heal_charge

    tokenizer = teacher[0].tokenizer
    data = encoded_texts(tokenizer, texts, max_length)
    record = heal(transformer_of(student), transformer_of(teacher), data, tokenizer,
                  manifest.span_ends(), config, runtime=runtime, cache_dir=cache_dir,
                  seed=seed)
    record["charge"] = heal_charge(config, len(manifest.span_ends()), len(record["layers"]),
                                   train_batch)
    return record
