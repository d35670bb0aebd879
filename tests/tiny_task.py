"""A tiny teacher folder (model + working tokenizer) and a tiny learnable CSV task on disk.

Used by the distillation, strategy and 2-process tests, and by the script the
distributed test launches (so every process builds exactly the same inputs).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from helpers import FIRST_WORD_ID, VOCAB, make_tiny_model, one_torch_thread
from transformers import BertTokenizer

WORDS = [f"w{i}" for i in range(VOCAB - FIRST_WORD_ID)]
POSITIVE, NEGATIVE, NEUTRAL = WORDS[:3], WORDS[3:6], WORDS[6:]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread for the module-scoped fixtures too (the autouse fixture in conftest
    starts only per test). Import this fixture into a test module."""
    with one_torch_thread():
        yield


def tiny_tokenizer() -> BertTokenizer:
    """A WordPiece tokenizer over WORDS (its vocabulary fits every tiny family's VOCAB)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(specials + WORDS)})


def save_tiny_teacher(directory, num_layers: int = 4, num_labels: int = 2, seed: int = 0,
                      head: bool = True, **overrides) -> str:
    """A tiny random BERT classifier and a WordPiece tokenizer over WORDS, saved to a folder.
    `head=False` saves the bare encoder (a `BertModel`, as a pretrained base model is)."""
    directory = Path(directory)
    tokenizer = tiny_tokenizer()
    model = make_tiny_model("bert", num_labels=num_labels, num_layers=num_layers, seed=seed,
                            **overrides)
    (model if head else model.base_model).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def write_tiny_task(directory, sizes=(64, 32, 32), seed: int = 0,
                    regression: bool = False) -> str:
    """train/dev/test CSVs of random neutral words plus 1-3 cue words of one polarity; the
    label is the polarity (or, for regression, the signed cue count, off by +-0.25)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, size in zip(("train", "dev", "test"), sizes, strict=True):
        with open(directory / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for _ in range(size):
                positive = rng.random() < 0.5
                cues = rng.choices(POSITIVE if positive else NEGATIVE, k=rng.randint(1, 3))
                words = rng.choices(NEUTRAL, k=rng.randint(2, 10)) + cues
                rng.shuffle(words)
                count = len(cues) if positive else -len(cues)
                label = count + rng.choice((-0.25, 0.25)) if regression else int(positive)
                writer.writerow([" ".join(words), label])
    return str(directory)


def train_tiny_teacher(directory, task_dir, steps: int = 48, **model_options) -> str:
    """A tiny teacher fine-tuned on the tiny task (it learns it: dev accuracy ~1.0)."""
    from layergraft.data.tasks import load_task
    from layergraft.pipeline.finetune import finetune
    from layergraft.training.train import TrainConfig

    base = save_tiny_teacher(Path(directory) / "base", **model_options)
    config = TrainConfig(output_dir="", max_steps=steps, learning_rate=3e-3, batch_size=16,
                         max_length=24, progress=False, early_stopping_patience=None)
    finetune(base, load_task(task_dir), str(Path(directory) / "teacher"), config)
    return str(Path(directory) / "teacher")
