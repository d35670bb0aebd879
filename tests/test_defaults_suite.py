"""Issue 32's default-recipe stage: its plan and order, a compress call that leaves the
method, rate and plan to auto, the rows it stores (from fabricated records: nothing is
trained), the dry run, and the section's verdicts from fabricated rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from lib import defaults_plan  # noqa: E402
from lib.stages import BASELINES, TRAINED  # noqa: E402
from report import defaults_section  # noqa: E402
from suites import defaults  # noqa: E402

from layergraft import api  # noqa: E402
from layergraft.training.budget import Budget  # noqa: E402

SENTIMENT, RATING = "movie-sentiment", "movie-rating"


def test_the_plan_runs_the_cells_in_the_briefed_order():
    cells = [(c.model, c.task, c.layers, c.seeds) for c in defaults_plan.CELLS]
    three = (0, 1, 2)
    assert cells == [("mpnet", SENTIMENT, 6, three),
                     *[("minilm", t, n, three) for t in (SENTIMENT, RATING) for n in (3, 2, 1)],
                     *[("mpnet", SENTIMENT, n, three) for n in (4, 3, 2)],
                     ("mpnet", RATING, 6, (0,)), ("mpnet", RATING, 3, (0,))]
    assert sum(len(c.seeds) for c in defaults_plan.CELLS) == 32


def test_a_later_seed_waits_for_the_first_whose_probes_it_reuses():
    first = defaults_plan.CELLS[0]
    assert defaults_plan.next_run(defaults_plan.CELLS, [], set()) == (first, 0)
    # seed 0 held by another process: the next cell's seed 0, not seed 1 of this one
    assert defaults_plan.next_run(defaults_plan.CELLS, [], {(first.slug, 0)}) == (
        defaults_plan.CELLS[1], 0)
    rows = [_row_id(first, 0)]
    assert defaults_plan.next_run(defaults_plan.CELLS, rows, set()) == (first, 1)


def _row_id(cell, seed):
    return {"model": cell.model, "task": cell.task, "layers": cell.layers, "seed": seed}


@pytest.mark.parametrize("model, budget, grouped", [("mpnet", "1 epoch", True),
                                                    ("minilm", "3 epochs", False)])
def test_the_compress_call_leaves_method_rate_and_plan_to_auto(tmp_path, model, budget,
                                                               grouped):
    cell = next(c for c in defaults_plan.CELLS if c.model == model)
    options = defaults.compress_options(cell, 1)
    assert not {"method", "learning_rate", "plan", "pairs"} & options.keys()
    assert str(options["budget"]) == str(Budget.parse(budget))
    assert options["precision"] == defaults.SUITES[model].precision == "fp32"
    assert options["cache_dir"] == defaults.SUITES[model].work / "cache"
    assert options["training"].group_by_length is grouped
    assert (options["ood"], options["speed"], options["seed"]) == (False, False, 1)
    assert options["out"] == defaults.WORK / f"{cell.slug}-s1"
    # the user's entry point resolves the missing method to auto (a dry run loads nothing)
    planned = api.compress(str(tmp_path / "teacher"), cell.task,
                           **{**options, "out": tmp_path / "out"}, dry_run=True)
    assert planned["status"] == "to do" and "auto" in planned["note"]


def _record(task=SENTIMENT, layers=6, seed=0, method="drop-top", plan=None, lr=2e-4,
            retention=0.99):
    metrics = ("accuracy", "macro_f1") if task == SENTIMENT else ("pearson", "spearman")

    def scored(split_retention):
        return {"metrics": dict.fromkeys(metrics, 0.9 * split_retention),
                "teacher": dict.fromkeys(metrics, 0.9),
                "retention": dict.fromkeys(metrics, split_retention),
                "agreement": 0.95, "examples": 1000}

    recipes = {"graft": {"learning_rate": 1e-4, "plan": "intact:3"},
               "drop-top": {"learning_rate": lr, "plan": "uniform"},
               "drop-alternate": {"learning_rate": 4e-4, "plan": "uniform"}}
    recipes[method] = {"learning_rate": lr, "plan": plan or "uniform"}
    choices = {"learning_rate": {"chosen": f"lr {lr:g}", "index": 3, "seconds": 1.0},
               "method": {"chosen": method, "index": 1, "recipes": recipes,
                          "dev_retention": {"graft": 0.96, "drop-top": 0.99,
                                            "drop-alternate": 0.80},
                          "budget": "0.125 epoch", "seconds": 5400.0}}
    if plan:
        choices["plan"] = {"chosen": plan, "index": 2, "seconds": 1.0}
    return {"task": task, "method": method, "strategy": "distill", "layers": layers,
            "seed": seed, "student": {"parameters": 1}, "teacher": {"parameters": 2},
            "train": {"seconds": 50.0}, "dev": scored(retention + 0.002),
            "test": scored(retention), "seconds": 720.0, "choices": choices,
            "settings": {"teacher_content": "abc123"}, "runtime": {"cpu_capability": "AVX512"}}


def test_the_rows_carry_what_the_default_chose_and_cost():
    cell = defaults_plan.CELLS[0]
    rows = defaults.cell_rows(_record(method="graft", plan="intact:3", lr=1e-4), cell)
    assert {(r["split"], r["metric"]) for r in rows} == {
        (s, m) for s in ("dev", "test") for m in ("accuracy", "macro_f1")}
    row = rows[0]
    assert (row["model"], row["chosen_method"], row["chosen_plan"], row["chosen_lr"]) == (
        "mpnet", "graft", "intact:3", 1e-4)
    assert (row["probe_seconds"], row["run_seconds"], row["teacher_content"]) == (
        5400.0, 720.0, "abc123")
    assert row["probe_dev_retention"] == {"graft": 0.96, "drop-top": 0.99,
                                          "drop-alternate": 0.80}
    assert row["cpu"].endswith("(AVX512)")
    dropped = defaults.cell_rows(_record(), cell)[0]
    assert (dropped["chosen_method"], dropped["chosen_plan"]) == ("drop-top", None)


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """The suite writing to tmp, with the teacher and compress faked: nothing trains."""
    monkeypatch.setattr(defaults, "RESULTS", tmp_path / "results" / "defaults.json")
    monkeypatch.setattr(defaults, "WORK", tmp_path / "work")
    monkeypatch.setattr(defaults, "make_teacher", lambda suite, task: tmp_path / task)
    calls = []

    def fake_compress(teacher, task, **options):
        calls.append((task, options))
        return _record(task, options["layers"], options["seed"])

    monkeypatch.setattr(defaults.api, "compress", fake_compress)
    (tmp_path / "results").mkdir()
    return calls


def test_the_stage_runs_every_cell_once_and_stores_its_rows(stage, capsys):
    defaults.main(["--only", "minilm"])
    minilm = [c for c in defaults_plan.CELLS if c.model == "minilm"]
    assert [(task, o["layers"], o["seed"]) for task, o in stage] == [
        (c.task, c.layers, s) for c in minilm for s in c.seeds]
    rows = json.loads(defaults.RESULTS.read_text())
    assert len(rows) == 18 * 4 and {r["model"] for r in rows} == {"minilm"}
    assert "minilm-movie-sentiment-L3 seed 0: drop-top" in capsys.readouterr().out
    defaults.main(["--only", "minilm"])  # resumed: everything is done
    assert len(stage) == 18


def test_the_dry_run_says_what_is_done_and_trains_nothing(stage, capsys):
    first = defaults_plan.CELLS[0]
    defaults.RESULTS.write_text(json.dumps([{**_row_id(first, 0), "split": "test"}]))
    defaults.main(["--dry-run", "--only", "mpnet"])
    out = capsys.readouterr().out
    assert "mpnet-movie-sentiment-L6 seed 0" in out and "minilm" not in out
    lines = {line.split()[0] + " " + line.split()[2]: line for line in out.splitlines()
             if line.startswith("  ")}
    assert lines["mpnet-movie-sentiment-L6 0"].rstrip().endswith("done")
    assert lines["mpnet-movie-sentiment-L6 1"].rstrip().endswith("to do")
    assert lines["mpnet-movie-sentiment-L4 1"].rstrip().endswith("to do (after seed 0)")
    assert "1 of 14 runs done, 13 to do" in out
    assert stage == []


def _old_run(task, method, strategy, layers, retention, seed=0):
    metric = {"movie-sentiment": "accuracy", "movie-rating": "spearman"}[task]
    return [{"kind": "run", "task": task, "method": method, "strategy": strategy,
             "layers": layers, "budget": 1.0, "seed": seed, "split": split, "metric": metric,
             "retention": retention, "agreement": 0.9} for split in ("dev", "test")]


def test_the_section_marks_targets_and_regressions(tmp_path):
    mpnet, minilm = [], []
    for layers in (6, 4):
        mpnet += _old_run(SENTIMENT, "graft", "distill", layers, 0.92)
        mpnet += [r for m in ("drop-alternate", "drop-top", "drop-similar", "random",
                              "average")
                  for r in _old_run(SENTIMENT, m, "distill", layers,
                                    0.956 if m == "drop-top" else 0.9)]
    for layers in (3, 2):
        minilm += [r for s in TRAINED for r in _old_run(SENTIMENT, "graft", s, layers, 0.97)]
        minilm += [r for m in BASELINES for seed in (0, 1, 2)
                   for r in _old_run(SENTIMENT, m, "distill", layers,
                                     (0.98 + 0.004 * seed) if m == "drop-alternate" else 0.9,
                                     seed)]
    (tmp_path / "mpnet.json").write_text(json.dumps(mpnet))
    (tmp_path / "offline.json").write_text(json.dumps(minilm))
    made = [(("mpnet", 6), 0.99, "drop-top", None), (("mpnet", 4), 0.96, "graft", "intact:2"),
            (("minilm", 3), 0.982, "graft", "uniform"), (("minilm", 2), 0.95, "graft", None)]
    rows = []
    for (model, layers), retention, method, plan in made:
        cell = next(c for c in defaults_plan.CELLS
                    if (c.model, c.task, c.layers) == (model, SENTIMENT, layers))
        for seed in (0, 1, 2):
            record = _record(SENTIMENT, layers, seed, method, plan, 1e-4,
                             retention + 0.002 * seed)
            rows += defaults.cell_rows(record, cell)
    (tmp_path / "defaults.json").write_text(json.dumps(rows))
    text = "\n".join(defaults_section.section(tmp_path / "defaults.json"))
    status = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").rsplit(" | ", 1)[1]
              for line in text.splitlines() if line.startswith("| MPNet movie")
              or line.startswith("| MiniLM movie")}
    assert status["MPNet movie-sentiment, 12 -> 6"] == "MET"  # 99.2% >= 98.5%
    assert status["MPNet movie-sentiment, 12 -> 4"] == "MISSED"  # 96.2% < 97%
    assert status["MPNet movie-sentiment, 12 -> 3"] == "not yet run"
    assert status["MiniLM movie-sentiment, 6 -> 3"] == "no regression"  # 98.4 vs 98.4
    assert status["MiniLM movie-sentiment, 6 -> 2"] == "REGRESSION"  # 95.2 vs 98.4 ± 0.4
    assert status["MiniLM movie-rating, 6 -> 1"] == "not yet run"
    assert "| MPNet | movie-sentiment | 12 -> 6 | drop-top, lr 1e-4 | 3 / 3 | 99.2 ± 0.2 | " \
           "95.6 (drop-top) | 92.0 |" in text
    assert "graft intact:2, lr 1e-4" in text and "1.50 |" in text  # probe hours, once


def test_the_section_says_the_stage_has_not_run(tmp_path):
    text = "\n".join(defaults_section.section(tmp_path / "defaults.json"))
    assert "has not run yet" in text and defaults_section.COMMAND in text
    assert text.count("not yet run") == 10
