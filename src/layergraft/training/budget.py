"""The training budget every method and strategy shares: epochs of the train split, steps, or
tokens (for objectives whose steps hold a fixed number of tokens, e.g. `lm`).

One definition in optimizer steps is what keeps comparisons fair: `compress` turns a budget
into steps with the global batch, and `progressive` shares exactly those steps among its
merges (`split_steps`, one stage at a time by `next_share`). `Budget.share` is the one rule
for a fraction of a budget (compare's shares, auto's probes), so a share keeps its unit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from layergraft.errors import LayergraftError

UNITS = ("epochs", "steps", "tokens")
WHOLE = ("steps", "tokens")  # counted in whole units


@dataclass(frozen=True)
class Budget:
    """How long every method and strategy trains: epochs of the train split, steps or tokens.

    Epochs become optimizer steps with the global batch (ceil(train / batch) steps per
    epoch); `progressive` shares exactly the steps `distill` gets among its merges.
    """

    amount: float
    unit: str = "epochs"

    def __post_init__(self) -> None:
        if self.unit not in UNITS or self.amount <= 0 or (
                self.unit in WHOLE and self.amount != int(self.amount)):
            raise LayergraftError(f"budget must be a positive number of epochs or a whole "
                                  f"number of steps or tokens, e.g. '3 epochs', '500 steps' "
                                  f"or '2000000 tokens', not {self}")

    @classmethod
    def parse(cls, value: Budget | str, units: tuple[str, ...] = UNITS) -> Budget:
        """A budget from "N epochs", "N steps" or "N tokens" (or a Budget), in `units` (what
        the objective can train for: a token budget needs steps of fixed token counts)."""
        budget = value
        if not isinstance(value, Budget):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(epoch|step|token)s?\s*", str(value))
            if not match:
                raise LayergraftError(f"cannot read budget '{value}': write e.g. '3 epochs', "
                                      "'500 steps' or '2000000 tokens'")
            budget = cls(float(match.group(1)), match.group(2) + "s")
        if budget.unit not in units:
            raise LayergraftError(f"a budget in {budget.unit} does not apply here: give "
                                  f"{' or '.join(units)}")
        return budget

    def share(self, fraction: float) -> Budget:
        """`fraction` of this budget in the same unit (steps and tokens round up)."""
        amount = self.amount * fraction
        return Budget(max(1, math.ceil(amount)) if self.unit in WHOLE else amount, self.unit)

    def steps(self, train_examples: int, global_batch: int,
              tokens_per_step: int | None = None) -> int:
        """Optimizer steps: epochs of `train_examples` at `global_batch`, or tokens at
        `tokens_per_step` (rounded up)."""
        if self.unit == "steps":
            return int(self.amount)
        if self.unit == "tokens":
            if not tokens_per_step:
                raise LayergraftError("a token budget needs steps of a fixed number of tokens")
            return max(1, math.ceil(self.amount / tokens_per_step))
        return max(1, math.ceil(self.amount * math.ceil(train_examples / global_batch)))

    def __str__(self) -> str:
        amount = f"{int(self.amount)}" if self.unit in WHOLE else f"{self.amount:g}"
        return f"{amount} {self.unit}"


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
