"""The text of one `lm` run: train blocks, dev / test / out-of-domain evaluation windows and
the calibration batches that surgery measures on (`layergraft.data.lm_text` cuts them all).

Blocks and windows are non-overlapping; the evaluation window is 1,024 tokens where the text
and the model allow it (else the largest power of two that fits, stated in every record), and
at most `eval_windows` of them are scored per text, the first ones, so quick runs stay quick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from layergraft.data.lm_text import (
    blocks,
    eval_windows,
    load_texts,
    token_stream,
)
from layergraft.surgery.arch import num_layers


@dataclass
class RunText:
    """Token blocks and windows of one run's text (see module doc)."""

    name: str
    described: dict
    train: torch.Tensor  # [n, block_length]
    windows: dict[str, torch.Tensor]  # "dev", "test" and each out-of-domain text's name
    depth: int
    calibration_windows: int = 32
    batch_size: int = 8
    ood: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, settings: Mapping, tokenizer, config) -> RunText:
        """Tokenise and cut the settings' text; a text too short is a one-line error."""
        from layergraft.data.encoding import usable_positions

        text = load_texts(settings["texts"]["source"])
        positions = usable_positions(config)
        cap = settings["eval_windows"]

        def windows_of(documents) -> torch.Tensor:
            return eval_windows(token_stream(tokenizer, documents), max_positions=positions,
                                max_windows=cap)

        train = blocks(token_stream(tokenizer, text.documents("train")),
                       settings["block_length"])
        windows = {split: windows_of(text.documents(split)) for split in ("dev", "test")}
        for name in settings["ood"]:
            windows[name] = windows_of(load_texts(name).documents("test"))
        return cls(text.name, text.describe(), train, windows, num_layers(config),
                   settings["calibration_windows"], ood=list(settings["ood"]))

    def calibration(self) -> list[dict[str, torch.Tensor]]:
        """Batches of the first train blocks, what importance and the baselines measure on."""
        rows = self.train[:self.calibration_windows]
        return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
                for chunk in rows.split(self.batch_size)]

    def calibration_info(self) -> dict:
        rows = min(len(self.train), self.calibration_windows)
        return {"blocks": rows, "block_length": int(self.train.shape[1])}

    def describe(self) -> dict:
        return {**self.described, "train_blocks": len(self.train),
                "block_length": int(self.train.shape[1]),
                "ood": self.ood}
