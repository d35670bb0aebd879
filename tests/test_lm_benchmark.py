"""benchmarks/lm.py, issue 34's LLM stage: the plan's grid and budget, the section's verdicts
from synthetic rows (in a tmp file only), the dry run without the model, and one tiny cell
run end to end through the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_lm_run import save_tiny_lm, write_tiny_text
from tiny_task import one_thread  # noqa: F401

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from lib import lm_plan as lm  # noqa: E402
from report import lm_section  # noqa: E402
from report.targets import MET, MISSED, NOT_MEASURED  # noqa: E402
from suites import lm as suite  # noqa: E402


def _row(layers: int, method: str, strategy: str, seed: int = 0, ppl: float = 30.0,
         dev: float | None = None, agreement: float = 0.5, **extra) -> dict:
    """A synthetic run row, shaped as suites/lm.py's `run_row` writes them."""
    key = lm.run_key(method, strategy, layers, seed)
    tokens = {"none": 0, "heal": lm.HEAL_STEPS * lm.HEAL_BATCH * lm.BLOCK,
              "distill": lm.DISTILL_STEPS * lm.BATCH * lm.BLOCK}[strategy]
    return {"kind": "run", "stage": lm.STAGE_OF[strategy], "run": key.name, "method": method,
            "strategy": strategy, "layers": layers, "seed": seed, "teacher_layers": 30,
            "teacher_content": "x", "tokens": tokens, "heal_tokens": 0, "train_seconds": 60.0,
            "run_seconds": 600.0, "settings_digest": "d", "window": 1024, "windows": 16,
            "prefill_ratio": None, "decode_ratio": None, "ideal_ratio": None,
            "dev_ppl": dev if dev is not None else ppl, "teacher_dev_ppl": 20.0,
            "test_ppl": ppl, "teacher_test_ppl": 20.0, "ood_ppl": ppl * 1.5,
            "teacher_ood_ppl": 15.0, "dev_kl": 0.1, "test_kl": 0.1, "ood_kl": 0.2,
            "dev_agreement": agreement, "test_agreement": agreement,
            "ood_agreement": agreement, **extra}


def test_every_method_gets_the_same_token_budget_and_the_grid_is_complete():
    assert lm.DISTILL_STEPS * lm.BATCH * lm.BLOCK >= lm.DISTILL_TOKENS
    assert lm.HEAL_STEPS * lm.HEAL_BATCH * lm.BLOCK <= lm.DISTILL_TOKENS / 10
    for stage, strategy in (("L0", "none"), ("L1", "heal"), ("L2", "distill")):
        planned = lm.plan(stage)
        assert {(p.key.layers, p.key.method) for p in planned} == {
            (n, m) for n in lm.DEPTHS for m in lm.METHODS}
        assert {p.key.strategy for p in planned} == {strategy}
        budgets = {tuple(sorted((k, str(v)) for k, v in suite.options(p.key).items()
                                if k in ("budget", "training", "heal", "eval_windows")))
                   for p in planned}
        assert len(budgets) == 1  # one budget, text and windows for every method
    assert {p.key.heal for p in lm.plan("L1")} == {lm.HEAL_STEPS}


def test_seeds_go_to_graft_and_the_baseline_of_lowest_dev_perplexity_only():
    rows = [_row(n, m, s, dev=50.0 if m == "sleb" else 60.0, ppl=90.0 if m == "sleb" else 10.0)
            for n in lm.DEPTHS for m in lm.METHODS for s in ("heal", "distill")]
    planned = lm.plan("L3", rows)
    assert not any(p.pending for p in planned)
    assert {p.key.method for p in planned} == {"graft", "sleb"}  # chosen on dev, not on test
    assert {p.key.seed for p in planned} == set(lm.EXTRA_SEEDS)
    assert len(planned) == 2 * len(lm.DEPTHS) * len(lm.SEEDED) * len(lm.EXTRA_SEEDS)
    waiting = lm.plan("L3", rows[:-1])  # one distilled baseline at 15 layers missing
    assert [p.pending for p in waiting if p.key.layers == 15 and p.key.strategy == "distill"]


def test_the_section_marks_every_target_met_or_missed_from_rows(tmp_path):
    path = tmp_path / "lm.json"
    assert lm_section.section(path)[-1] == "No runs yet: `python benchmarks/lm.py`."
    rows = []
    for layers in lm.DEPTHS:
        for method in lm.METHODS:
            graft = method == "graft"
            for strategy, base in (("none", 80.0), ("heal", 40.0), ("distill", 30.0)):
                ppl = 21.0 if graft and strategy == "distill" else (
                    35.0 if graft and strategy == "heal" else base)
                seeds = (0, 1, 2) if method in ("graft", "shortgpt") else (0,)
                speed = {"prefill_ratio": 1.40, "decode_ratio": 1.35,
                         "ideal_ratio": 30 / layers} if graft and strategy == "distill" else {}
                rows += [_row(layers, method, strategy, s, ppl + 0.1 * s,
                              agreement=0.7 if graft else 0.6, **speed) for s in seeds]
    path.write_text(json.dumps(rows))
    text = "\n\n".join(lm_section.section(path))
    checks = lm_section.evaluate(lm_section.seed_stats(rows))
    verdicts = {(c.target, c.scope): c.status for c in checks}
    assert verdicts["quality", "30 -> 22"] == MET  # 21.1 / 20 <= 1.10
    assert verdicts["perplexity", "30 -> 15"] == MET and verdicts["agreement", "30 -> 22"] == MET
    assert verdicts["retraining-free", "30 -> 22, rivals heal"] == MET
    assert verdicts["speed", "30 -> 22"] == MET and verdicts["speed", "30 -> 15"] == MISSED
    assert "MISSED" in text and "200,704" in text and "single-core hours" in text
    assert "| **graft** | distill | 3 | 21.10 ± 0.10 |" in text
    partial = [r for r in rows if not (r["method"] == "laco" and r["strategy"] == "distill")]
    checks = lm_section.evaluate(lm_section.seed_stats(partial))
    assert {(c.target, c.scope): c.status for c in checks}["perplexity", "30 -> 22"] == \
        NOT_MEASURED


def test_the_dry_run_lists_the_plan_without_the_model(tmp_path):
    env = {**os.environ, "LAYERGRAFT_CACHE": str(tmp_path / "empty"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "lm.py", "--dry-run", "--stage", "L0", "--stage",
                           "L3"], cwd=BENCHMARKS, env=env, capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert "absent" in done and "L22-graft-none-s0" in done and "pending" in done
    assert "single-core hours left" in done and "200,704 tokens" in done


def test_one_tiny_cell_runs_through_the_suite_and_is_then_done(tmp_path, one_thread):  # noqa: F811
    teacher = save_tiny_lm(tmp_path / "teacher", max_position_embeddings=256)
    extra = {"texts": write_tiny_text(tmp_path / "text.txt", documents=120),
             "ood_texts": (write_tiny_text(tmp_path / "ood.txt", seed=1),),
             "eval_windows": 2, "calibration_windows": 4}
    results, work = tmp_path / "lm.json", tmp_path / "work"
    planned = lm.Planned("L1", lm.TEXT, lm.run_key("graft", "heal", 2))
    assert suite.state(planned, [], teacher, work, extra) == "todo"
    row = suite.run_one(planned, results, work, teacher, extra)
    assert row["kind"] == "run", row
    assert row["tokens"] == row["heal_tokens"] == lm.HEAL_STEPS * lm.HEAL_BATCH * lm.BLOCK
    assert row["test_ppl"] > 0 and row["teacher_test_ppl"] > 0 and row["settings_digest"]
    rows = json.loads(results.read_text())
    assert [r["run"] for r in rows] == [planned.key.name]
    assert suite.state(planned, rows, teacher, work, extra) == "done"
    (work / "runs").rename(tmp_path / "gone")  # a new machine: only the committed row is left
    assert suite.state(planned, rows, teacher, work, extra) == "done"


@pytest.mark.parametrize("strategy", lm.STRATEGIES)
def test_hours_are_estimated_for_every_strategy(strategy):
    assert 0 < lm.estimated_hours([], lm.run_key("sleb", strategy, 15)) < 3
