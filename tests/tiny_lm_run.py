"""A tiny saved decoder teacher (random llama + char tokenizer) and a tiny text file, for the
`lm` objective's tests."""

from __future__ import annotations

import random
from pathlib import Path

from tiny_decoders import tiny_decoder
from tiny_lm import tiny_char_tokenizer

WORDS = ("the film was good bad long short funny dull and the actors were warm cold "
         "i liked it a lot but the ending did not work for me at all").split()


def save_tiny_lm(folder: Path, **overrides) -> str:
    """A 4-layer random llama with the char tokenizer, saved as a stock folder."""
    tiny_decoder("llama", **overrides).save_pretrained(folder)
    tiny_char_tokenizer().save_pretrained(folder)
    return str(folder)


def write_tiny_text(path: Path, documents: int = 90, seed: int = 0) -> str:
    """Plain text, documents of a few random sentences separated by blank lines."""
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))) + "."
            for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n")
    return str(path)
