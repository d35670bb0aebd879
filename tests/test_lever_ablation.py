"""benchmarks/lever_ablation.py: every cell is a run that compress accepts, at the stated budget."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from suites import lever_ablation  # noqa: E402

from layergraft.objectives.strategies import check_request  # noqa: E402

CELLS = [(name, cell) for cells, _ in lever_ablation.SETS.values() for name, cell in cells.items()]


@pytest.mark.parametrize(("name", "cell"), CELLS, ids=[name for name, _ in CELLS])
def test_every_cell_is_a_valid_run(name, cell):
    check_request(cell.method, cell.strategy, heal=cell.heal() if cell.heal_steps else None,
                  progressive_schedule=cell.progressive_schedule)
    trains = cell.strategy not in ("none", "heal")
    assert (cell.budget > 0) == trains, name
    if "1/4" in name:
        assert cell.budget == 0.25
    if "heal 26" in name:
        assert cell.heal_steps == lever_ablation.TENTH_EPOCH


def test_the_levers_share_their_references():
    levers = lever_ablation.LEVERS
    assert {"graft, distill 1/4", "drop-alternate, distill 1/4"} <= set(levers)
    assert levers["graft, progressive 1/4, one schedule"].progressive_schedule == "one"
    assert levers["graft, distill 1/4 + attention 1.0"].distill.attention_weight == 1.0
    assert levers["graft chosen by reconstruction, distill 1/4"].options.choose == \
        "reconstruction"
