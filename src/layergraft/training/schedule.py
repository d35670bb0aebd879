"""One optimizer and one learning-rate curve across the stages of a progressive run.

By default (`per-stage`) every progressive stage is a training run of its own: its own
AdamW and its own warm-up and linear decay to zero, so the learning rate re-warms and dies
once per merge. `OneSchedule` makes the stages one run instead: a single warm-up then
linear decay over the whole budget, each stage starting on the curve where the previous
one stopped, and AdamW's moments kept for every parameter a merge leaves unchanged
(embeddings, head, untouched layers; `layergraft.surgery.recipes.unchanged_parameters`),
fresh only for the new grafted layer. Optimizer and scheduler stay the Trainer's own
(`TaskTrainer` asks this object to seed the one and place the other), and a finished
stage's state is saved beside its model, so a resumed run continues the same curve.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import get_linear_schedule_with_warmup

from layergraft.utils import atomic_write

STATE_FILE = "optimizer_state.safetensors"
_SEP = "::"  # between a parameter's name and its state's key in the saved file


class OneSchedule:
    """The run-wide curve (`total` steps) and what the next stage inherits: the step it
    starts at (`offset`) and the optimizer state of the model trained last, by name."""

    def __init__(self, total: int, offset: int = 0,
                 state: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> None:
        self.total, self.offset = total, offset
        self.state = {name: dict(values) for name, values in (state or {}).items()}

    def follow(self, renames: Mapping[str, str]) -> None:
        """Re-key the state to the next stage's model: `renames` maps each of its parameters
        that surgery left unchanged to its old name; every other parameter starts fresh."""
        self.state = {new: self.state[old] for new, old in renames.items() if old in self.state}

    def seed(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
        """Give the new optimizer the inherited state, through its own `load_state_dict` (which
        puts every tensor where that optimizer keeps it)."""
        names = {id(p): name for name, p in model.named_parameters()}
        order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        saved = optimizer.state_dict()
        saved["state"] = {i: self.state[name] for i, name in enumerate(order)
                          if name in self.state}
        optimizer.load_state_dict(saved)

    def scheduler(self, optimizer: torch.optim.Optimizer,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        """transformers' linear warm-up and decay over the whole run, already at `offset`."""
        for group in optimizer.param_groups:  # what a scheduler past step 0 starts from
            group.setdefault("initial_lr", group["lr"])
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, self.total,
                                               last_epoch=self.offset - 1)

    def finish(self, steps: int, optimizer: torch.optim.Optimizer,
               model: torch.nn.Module) -> None:
        """After a stage of `steps` steps: the next starts there, with this optimizer's state."""
        self.offset += steps
        self.state = {name: dict(optimizer.state[p]) for name, p in model.named_parameters()
                      if p in optimizer.state}

    def save(self, folder: str | os.PathLike) -> None:
        """Offset and state beside a finished stage's model, for a resumed run."""
        tensors = {f"{name}{_SEP}{key}": value.detach().cpu().contiguous()
                   for name, values in self.state.items() for key, value in values.items()}
        metadata = {"total": str(self.total), "offset": str(self.offset)}
        atomic_write(Path(folder) / STATE_FILE,
                     lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> OneSchedule:
        """The schedule `save` left in `folder`: a resumed run goes on from there."""
        path = Path(folder) / STATE_FILE
        with safe_open(path, "pt") as handle:
            meta = handle.metadata()
        state: dict[str, dict[str, torch.Tensor]] = {}
        for flat, value in load_file(path).items():
            name, key = flat.rsplit(_SEP, 1)
            state.setdefault(name, {})[key] = value
        return cls(int(meta["total"]), int(meta["offset"]), state)
