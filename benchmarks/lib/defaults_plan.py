"""What issue 32's default-recipe stage runs (suites/defaults.py runs it,
report/defaults_section.py reports it): the cells, their order, the targets, and which run
may start next. Both sides read it, so the plan is stated once."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from lib.mpnet_plan import TASK as SENTIMENT
from lib.stages import DEPTHS, TASKS

RATING = "movie-rating"
SEEDS = (0, 1, 2)
MODELS = ("mpnet", "minilm")  # the 12-layer suite's teacher, the offline suite's
# issue 32: the default's mean test retention of the MPNet movie-sentiment teacher, 12 -> N
TARGETS: Mapping[int, float] = {6: 0.985, 4: 0.97, 3: 0.955, 2: 0.93}


@dataclass(frozen=True)
class Cell:
    """One teacher, task and depth, run with the default recipe at each of `seeds`."""

    model: str  # "mpnet" or "minilm": whose suite gives the teacher, budget and precision
    task: str
    layers: int
    seeds: tuple[int, ...] = SEEDS

    @property
    def slug(self) -> str:
        return f"{self.model}-{self.task}-L{self.layers}"

    @property
    def metric(self) -> str:
        """The metric the suites state the task's retention in."""
        return TASKS[self.task]


# The most telling first: MPNet 12 -> 6, where drop-top beat graft at the old defaults; then
# MiniLM, where the old default (graft) was at least as good (the default must not regress);
# then MPNet's deeper cuts, then a second MPNet task at one seed.
CELLS: tuple[Cell, ...] = (
    Cell("mpnet", SENTIMENT, 6),
    *(Cell("minilm", task, layers) for task in TASKS for layers in DEPTHS),
    *(Cell("mpnet", SENTIMENT, layers) for layers in (4, 3, 2)),
    *(Cell("mpnet", RATING, layers, (0,)) for layers in (6, 3)),
)


def identity(row: Mapping) -> tuple:
    """What makes a row's run: model, task, depth and seed (one run per cell and seed)."""
    return row["model"], row["task"], row["layers"], row["seed"]


def done(rows: Sequence[Mapping], cell: Cell, seed: int) -> bool:
    return any(identity(r) == (cell.model, cell.task, cell.layers, seed) for r in rows)


def waits(rows: Sequence[Mapping], cell: Cell, seed: int) -> bool:
    """A later seed waits for the cell's first: that run makes the probes (cached, shared by
    every seed), and two processes probing into one cache folder at once would collide."""
    return seed != cell.seeds[0] and not done(rows, cell, cell.seeds[0])


def next_run(cells: Sequence[Cell], rows: Sequence[Mapping],
             tried: Collection[tuple[str, int]]) -> tuple[Cell, int] | None:
    """The first run in plan order that is not done, not waiting and not yet tried by this
    process (a run another process holds is tried once, then left to it)."""
    for cell in cells:
        for seed in cell.seeds:
            if (cell.slug, seed) not in tried and not done(rows, cell, seed) \
                    and not waits(rows, cell, seed):
                return cell, seed
    return None
