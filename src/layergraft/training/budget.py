"""The training budget every method and strategy shares: epochs of the train split, or steps.

One definition in optimizer steps is what keeps comparisons fair: `compress` turns a budget
into steps with the global batch, and `progressive` shares exactly those steps among its
merges (`split_steps`, one stage at a time by `next_share`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from layergraft.errors import LayergraftError


@dataclass(frozen=True)
class Budget:
    """How long every method and strategy trains: epochs of the train split, or steps.

    Epochs become optimizer steps with the global batch (ceil(train / batch) steps per
    epoch); `progressive` shares exactly the steps `distill` gets among its merges.
    """

    amount: float
    unit: str = "epochs"

    def __post_init__(self) -> None:
        if self.unit not in ("epochs", "steps") or self.amount <= 0 or (
                self.unit == "steps" and self.amount != int(self.amount)):
            raise LayergraftError(f"budget must be a positive number of epochs or a whole "
                                  f"number of steps, e.g. '3 epochs' or '500 steps', not {self}")

    @classmethod
    def parse(cls, value: Budget | str) -> Budget:
        if isinstance(value, Budget):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(epochs?|steps?)\s*", str(value))
        if not match:
            raise LayergraftError(f"cannot read budget '{value}': write e.g. '3 epochs' or "
                                  "'500 steps'")
        unit = match.group(2) if match.group(2).endswith("s") else match.group(2) + "s"
        return cls(float(match.group(1)), unit)

    def steps(self, train_examples: int, global_batch: int) -> int:
        if self.unit == "steps":
            return int(self.amount)
        return max(1, math.ceil(self.amount * math.ceil(train_examples / global_batch)))

    def __str__(self) -> str:
        return f"{self.amount:g} {self.unit}"


def split_steps(total: int, parts: int) -> list[int]:
    """`total` steps shared as evenly as possible by `parts` stages (later ones get more)."""
    if total < parts:
        raise LayergraftError(f"a budget of {total} steps cannot train {parts} progressive "
                              f"stages: give at least {parts} steps")
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


def next_share(total: int, taken: int, stages_left: int) -> int:
    """The steps of the next of `stages_left` stages once `taken` of `total` are spent: its
    even share of what is left (stage by stage, the shares of `split_steps`), so the last
    stage gets all that is left and no step is lost to rounding or to a stage stopped
    early."""
    return split_steps(total - taken, stages_left)[0]
