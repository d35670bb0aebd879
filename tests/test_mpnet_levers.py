"""Issue 32's lever grid: its cells are valid compress calls, and its section marks the
strongest baseline and draws retention against the learning rate from the rows alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from report import mpnet_levers_section  # noqa: E402
from suites import mpnet_levers  # noqa: E402

from layergraft.objectives.strategies import check_request  # noqa: E402
from layergraft.surgery.plan import Plan  # noqa: E402


def test_every_cell_is_a_valid_12_to_6_request(tmp_path):
    for name, cell in mpnet_levers.CELLS.items():
        options = cell.options(0, tmp_path / "x")
        check_request(cell.method, cell.strategy, options["pairs"], options["heal"])
        if cell.plan:
            assert Plan.from_spans(12, cell.plan).target_layers == 6, name
        assert options["budget"].amount == 0.25  # of one epoch: the compute target's share


def _row(variant, split, retention, seed=0):
    return {"variant": variant, "split": split, "metric": "accuracy", "seed": seed,
            "retention": retention, "agreement": 0.9, "train_seconds": 100.0, "restarts": 0,
            "teacher_content": "abc"}


def test_the_section_marks_the_strongest_baseline_and_plots_the_rate_curve(tmp_path):
    rows = [_row(v, s, r) for v, r in (("graft, lr 1e-4", 0.95), ("graft, lr 5e-5", 0.93),
                                         ("drop-top, lr 1e-4", 0.96),
                                         ("drop-similar, lr 1e-4", 0.90))
            for s in ("dev", "test")]
    path = tmp_path / "mpnet_levers.json"
    path.write_text(json.dumps(rows))
    text = "\n".join(mpnet_levers_section.section(path, tmp_path / "figures", "figures"))
    assert "**drop-top, lr 1e-4** (strongest baseline on dev)" in text
    assert "| graft, lr 1e-4 | 1 | 95.00 | 95.00 |" in text
    assert (tmp_path / "figures" / mpnet_levers_section.FIGURE).stat().st_size > 1000
    assert text.count("Teacher content abc") == 1


def test_cells_of_another_teacher_get_a_table_of_their_own(tmp_path):
    rows = [_row(v, s, r) for v, r in (("graft, lr 1e-4", 0.95), ("drop-top, lr 1e-4", 0.96))
            for s in ("dev", "test")]
    rows += [{**_row("graft, lr 2e-5", s, 0.91), "teacher_content": "def",
              "teacher_value": 0.9} for s in ("dev", "test")]
    path = tmp_path / "mpnet_levers.json"
    path.write_text(json.dumps(rows))
    text = "\n".join(mpnet_levers_section.section(path, tmp_path / "figures", "figures"))
    assert text.index("Teacher content abc; 2 cells") < text.index(
        "Teacher content def (accuracy dev 90.00 / test 90.00); 1 cell,")
    assert text.count("| cell | seeds |") == 2
