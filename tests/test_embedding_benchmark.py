"""benchmarks/embeddings.py: its plan puts the headline comparison first and redoes stale rows."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from suites import embeddings  # noqa: E402


def _seed0_rows(cosines: dict[str, float], layers: int) -> list[dict]:
    return [{"model": "minilm", "layers": layers, "seed": 0, "strategy": "distill",
             "heal": 0, "method": method, "mean_cosine": cosine}
            for method, cosine in cosines.items()]


def test_graft_and_the_recipe_get_three_seeds_before_the_other_baselines():
    names = [p.name for p in embeddings.plan("minilm")]
    assert len(names) == len(set(names))
    recipe_seed2 = names.index("L2-drop-alternate-distill-s2")
    assert recipe_seed2 < names.index("L3-drop-top-distill-s0")
    assert names.index("L3-graft-none-s0") < names.index("L3-graft-distill-s0")
    pending = [p for p in embeddings.plan("minilm") if p.pending]
    assert len(pending) == 4  # the strongest baselines' seeds wait for the seed-0 rows


def test_the_strongest_baseline_gets_seeds_only_when_it_is_not_the_recipe():
    recipe_best = _seed0_rows({"drop-alternate": 0.95, "drop-top": 0.9, "random": 0.8,
                               "average": 0.7}, layers=3)
    other_best = _seed0_rows({"drop-alternate": 0.9, "drop-top": 0.8, "random": 0.96,
                              "average": 0.7}, layers=2)
    names = [p.name for p in embeddings.plan("minilm", recipe_best + other_best)]
    assert len(names) == len(set(names))
    assert "L2-random-distill-s1" in names and "L2-random-distill-s2" in names
    assert not any(n.startswith("L3-") and "distill-s1" in n and "drop-alternate" not in n
                   and "graft" not in n for n in names)


def test_a_row_made_with_other_settings_is_not_stored():
    planned = embeddings.plan("minilm")[0]
    row = {"model": planned.model, "run": planned.name, "settings": embeddings.run_settings()}
    assert embeddings._stored(planned, [row])
    stale = {**row, "settings": {**row["settings"], "budget": "2 epochs"}}
    assert not embeddings._stored(planned, [stale])
    assert not embeddings._stored(planned, [{"model": planned.model, "run": planned.name}])
