"""The one optimisation loop of the `lm` objective, for healing and for distillation alike.

Batches are full blocks of the train text (no padding: `block_batch`), drawn in a fresh
seeded order every pass (`shuffled_batches`); a step is one batch. AdamW with linear
warm-up and decay, as the encoder objectives' trainers use; no dev evaluation inside the
loop (a step budget, not early stopping, keeps methods comparable).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from transformers import get_linear_schedule_with_warmup

from layergraft.training.heal import take_step


def block_batch(rows: torch.Tensor, ids: torch.Tensor | None = None) -> dict:
    """A batch of full blocks; `ids` are the rows' block indices (the teacher cache's key)."""
    batch = {"input_ids": rows, "attention_mask": torch.ones_like(rows)}
    return batch if ids is None else {**batch, "example_id": ids}


def shuffled_batches(blocks: torch.Tensor, batch_size: int, seed: int) -> Iterator[dict]:
    """Endless batches of `blocks`, each pass in its own seeded order."""
    epoch = 0
    while True:
        order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed + epoch))
        for ids in order.split(max(1, batch_size)):
            yield block_batch(blocks[ids], ids)
        epoch += 1


def fit(model, params: Sequence[torch.nn.Parameter], loss_fn: Callable, batches: Iterator[dict],
        steps: int, *, learning_rate: float, runtime, warmup_ratio: float = 0.1,
        weight_decay: float = 0.0) -> dict:
    """Train `params` of `model` for `steps` batches in place -> steps, seconds, losses."""
    record = {"steps": 0, "seconds": 0.0, "first_loss": None, "last_loss": None,
              "learning_rate": learning_rate}
    if not steps:
        return record
    device = runtime.device
    model.to(device).train()
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * steps), steps)
    start = time.perf_counter()
    for step in range(steps):
        batch = {k: v.to(device) for k, v in next(batches).items()}
        with runtime.autocast():
            loss = loss_fn(model, batch)
        value = take_step(loss, optimizer, schedule)
        record["first_loss"] = value if step == 0 else record["first_loss"]
        record["last_loss"] = value
    model.eval()
    return {**record, "steps": steps, "seconds": round(time.perf_counter() - start, 2)}
