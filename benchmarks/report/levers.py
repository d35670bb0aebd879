"""Issue 13's question for a missed target: which of graft's levers got closest?

The targets judge the configuration chosen on dev; this table shows, beside that choice,
every lever graft ran in the same cell (task, depth, budget), seed 0 alone so that every
cell is like for like, on dev (where the choice is made) and on test (where it is judged).
A lever that leads on test but not on dev is shown, never chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lib.stages import (
    CURVE_STRATEGIES,
    DEPTHS,
    TASKS,
    TRAINED,
    point_configs,
    seed0_row,
)

from layergraft.report.tables import markdown_from_cells

BUDGETS = {1.0: "full", 0.25: "1/4"}  # what the quality and compute targets read


def _cell(rows: Sequence[Mapping], task: str, layers: int, method: str, strategy: str,
          budget: float, chosen: bool) -> str:
    found = [seed0_row(rows, task, layers, method, strategy, budget, split)
             for split in ("dev", "test")]
    if found == [None, None]:
        return "—"
    text = " / ".join("—" if r is None else f"{100 * r['retention']:.1f}" for r in found)
    return f"**{text}**" if chosen else text


def section(rows: Sequence[Mapping]) -> list[str]:
    """The heading, a sentence on how to read it, and the table (every task, depth and the
    two budgets the targets read)."""
    head = ["task", "layers", "budget", *(f"graft/{s}" for s in TRAINED), "strongest baseline"]
    cells = []
    for task in TASKS:
        for layers in DEPTHS:
            for budget, label in BUDGETS.items():
                chosen = point_configs(rows, task, layers, budget)
                graft_pick = chosen[0][1] if chosen else None
                levers = [_cell(rows, task, layers, "graft", s, budget, s == graft_pick)
                          if budget == 1.0 or s in CURVE_STRATEGIES else "—" for s in TRAINED]
                rival = (f"{chosen[1][0]}/{chosen[1][1]}: "
                         + _cell(rows, task, layers, *chosen[1], budget, False)
                         if chosen else "not yet chosen")
                cells.append([task, f"{layers}", label, *levers, rival])
    return ["### Every graft lever in each cell (seed 0, dev / test retention %)",
            "Bold: the strategy chosen on dev, which the targets above judge (with its seeds); "
            "the others are shown to say which lever came closest, not chosen. At 1/4 each "
            "point chooses among graft's distilling strategies (finetune: —) and the two "
            "strongest full-budget baselines, on its own dev rows.",
            markdown_from_cells(head, cells)]
