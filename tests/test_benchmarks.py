"""The offline suite's machinery (benchmarks/): stage plans, target verdicts, the rendered
page and --dry-run, on synthetic compress records. Nothing here trains."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from lib import stages  # noqa: E402
from lib.recorded import settings_digest  # noqa: E402
from report import levers, render, targets  # noqa: E402
from suites import offline  # noqa: E402

from layergraft.pipeline.compare import RunKey, strategy_label  # noqa: E402
from layergraft.surgery.methods import METHODS  # noqa: E402

SENT, RATE = "movie-sentiment", "movie-rating"
OOD = ("tweets-sentiment", "products-sentiment", "editorials-sentiment")
ISSUE_KEYS = ("task", "method", "strategy", "layers", "budget", "seed", "split", "metric",
              "value", "teacher_value", "retention", "agreement", "throughput_ratio",
              "train_seconds")


def record(task, method, strategy, layers, *, seed=0, dev=0.98, test=0.98, agree=0.95,
           ood=None, speed=(1.95, 1.9), seconds=100.0, steps=795):
    """A compress results record whose retention on each split is the given number."""
    metric, teacher = stages.TASKS[task], 0.84

    def split(retention, examples, agreement=agree):
        return {"examples": examples, "metrics": {metric: retention * teacher},
                "teacher": {metric: teacher}, "retention": {metric: retention},
                "agreement": agreement}

    trained = strategy != "none"
    out = {"task": task, "method": method, "strategy": strategy, "layers": layers, "seed": seed,
           "student": {"parameters": 1000 * layers}, "teacher": {"parameters": 6000, "layers": 6},
           "train": {"seconds": seconds if trained else 0.0, "budget_steps": steps * trained,
                     "stages": [{"steps": steps, "global_step": steps}] if trained else []},
           "speed": {"throughput_ratio": {"32": speed[0], "1": speed[1]}},
           "dev": split(dev, 1040), "test": split(test, 1060), "seconds": seconds,
           "settings": {"task": task, "method": method, "strategy": strategy, "layers": layers,
                        "seed": seed}}
    for name, value in (ood or {}).items():
        out[name] = split(0.9, 4000, value)
    return out


def rows_of(*records, budget=1.0, stage="A"):
    rows = []
    for rec in records:
        key = RunKey(rec["method"], rec["strategy"], rec["layers"], rec["seed"], budget,
                     heal=(rec.get("heal") or {}).get("steps", 0))
        rows += offline.suite_rows(rec, stages.Planned(stage, rec["task"], key),
                                   Path("/nonexistent"), settings_digest(rec["settings"], {}))
    return rows


def grid(task, layers, dev=None, test=None, default=0.95, **options):
    """Every cell of the stage A-C grid; `dev`/`test` map (method, strategy) to retention."""
    dev, test = dev or {}, test or {}
    records = []
    for k in stages.grid([layers]):
        cell = (k.method, strategy_label(k.strategy, k.heal))
        records.append(grid_record(task, k, dev=dev.get(cell, default),
                                   test=test.get(cell, default), **options))
    return rows_of(*records)


def curve_point(rows, task, layers, budget, dev=None, test=None, default=0.9):
    """Stage D's rows of every candidate at one budget point; dev/test by (method, strategy)."""
    dev, test = dev or {}, test or {}
    return rows_of(*(grid_record(task, stages.run_key(m, s, layers, 0, budget),
                                 dev=dev.get((m, s), default), test=test.get((m, s), default))
                     for m, s in stages.curve_candidates(rows, task, layers)),
                   budget=budget, stage="D")


def grid_record(task, key, **options):
    """`record` of a grid cell, healed first where the cell says so."""
    return {**record(task, key.method, key.strategy, key.layers, **options),
            "heal": {"steps": key.heal} if key.heal else None}


def check(rows, target, scope):
    found = [c for c in targets.evaluate(rows) if c.target == target and c.scope == scope]
    assert len(found) == 1, found
    return found[0]


def test_grids_put_surgery_only_first_and_cover_every_cell():
    a = stages.plan_stage("A")
    assert len(a) == 18 and {p.task for p in a} == {SENT} and {p.key.layers for p in a} == {3}
    assert [p.key.strategy for p in a[:7]] == ["none"] * 7
    assert {(p.key.method, p.key.strategy, p.key.heal) for p in a if p.key.method == "graft"} \
        == {("graft", s, 0) for s in ("none", "finetune", "distill", "progressive", "replace")} \
        | {("graft", "distill", stages.HEAL_STEPS)}
    assert "L3-graft-distill+heal26-s0" in {p.key.name for p in a}
    assert {p.key.method for p in a if p.key.strategy == "distill"} == set(METHODS)
    b, c = stages.plan_stage("B"), stages.plan_stage("C")
    assert [p.key.layers for p in b] == [2] * 18 + [1] * 18
    assert len(c) == 54 and {p.task for p in c} == {RATE}
    assert all(p.pending is None for p in a + b + c) and stages.plan_stage("cost") == []
    with pytest.raises(ValueError, match="unknown stage"):
        stages.plan_stage("Z")


def test_curves_and_seeds_follow_dev_choices_never_test():
    # On dev: graft/progressive and drop-alternate lead; on test the order is reversed.
    dev = {("graft", "progressive"): 0.99, ("graft", "distill"): 0.98,
           ("drop-alternate", "distill"): 0.985}
    test = {("graft", "distill"): 0.999, ("drop-top", "distill"): 0.999}
    rows = grid(SENT, 3, dev=dev, test=test)
    assert stages.curve_configs(rows, SENT, 3) == [("graft", "progressive"),
                                                   ("drop-alternate", "distill")]
    d = stages.plan_stage("D", rows)
    ready = [p.key.name for p in d if p.pending is None]
    # every candidate of every point: graft's distilling strategies, the two strongest on dev
    assert len(d) == 48 and ready[:6] == [
        "L3-graft-distill-s0-b0.25", "L3-graft-progressive-s0-b0.25",
        "L3-graft-replace-s0-b0.25", "L3-graft-distill+heal26-s0-b0.25",
        "L3-drop-alternate-distill-s0-b0.25", "L3-random-distill-s0-b0.25"]
    assert len(ready) == 18 and ready[6].endswith("-b0.125")
    assert {p.pending for p in d if p.pending} == {
        f"{t} {n}L" for t in (SENT, RATE) for n in (3, 2, 1)} - {f"{SENT} 3L"}
    e = [p.key.name for p in stages.plan_stage("E", rows) if p.pending is None]
    assert len(e) == 8 and e[:4] == ["L3-graft-progressive-s1", "L3-drop-alternate-distill-s1",
                                     "L3-graft-progressive-s2", "L3-drop-alternate-distill-s2"]
    assert e[-4:] == ["L3-graft-none-s1", "L3-drop-alternate-none-s1", "L3-graft-none-s2",
                      "L3-drop-alternate-none-s2"]
    # At 1/4 the point chooses on its own dev rows (replace; random over drop-alternate)
    quarter = curve_point(rows, SENT, 3, 0.25, dev={("graft", "replace"): 0.97,
                                                    ("random", "distill"): 0.96},
                          test={("graft", "distill"): 0.99})
    assert stages.point_configs(rows + quarter, SENT, 3, 0.25) == [("graft", "replace"),
                                                                   ("random", "distill")]
    e = [p.key.name for p in stages.plan_stage("E", rows + quarter) if p.pending is None]
    assert "L3-graft-replace-s1-b0.25" in e and "L3-random-distill-s2-b0.25" in e
    missing = [r for r in quarter if r["run"] != "L3-random-distill-s0-b0.25"]
    assert stages.point_configs(rows + missing, SENT, 3, 0.25) is None  # a candidate missing
    # One grid cell missing: nothing is chosen yet, so a rerun can never change the choice.
    partial = [r for r in rows if r["run"] != "L3-graft-finetune-s0"]
    assert stages.curve_configs(partial, SENT, 3) is None
    assert all(p.pending for p in stages.plan_stage("D", partial))


def test_an_exact_tie_on_dev_is_broken_by_dev_agreement_not_by_list_order():
    tie = {("graft", "finetune"): 0.99, ("graft", "replace"): 0.99}
    rows = grid(SENT, 2, dev=tie)
    assert stages.best_strategy(rows, SENT, 2, "graft")[0] == "finetune"  # level: list order
    for row in rows:
        if row["run"] == "L2-graft-replace-s0":  # agrees more with the teacher on dev only
            row["agreement"] = 0.97 if row["split"] == "dev" else 0.5
    assert stages.best_strategy(rows, SENT, 2, "graft")[0] == "replace"
    assert stages.curve_configs(rows, SENT, 2)[0] == ("graft", "replace")


def test_quality_target_met_missed_and_not_measured():
    rows = grid(SENT, 3, test={("graft", "distill"): 0.995}, dev={("graft", "distill"): 0.99})
    rows += grid(SENT, 2, test={("graft", "distill"): 0.95}, dev={("graft", "distill"): 0.99})
    met = check(rows, "quality", f"{SENT}, 3 layers")
    assert met.status == targets.MET and met.measured.startswith("99.50% (graft/distill")
    assert check(rows, "quality", f"{SENT}, 2 layers").status == targets.MISSED
    assert check(rows, "quality", f"{SENT}, 1 layer").status == targets.NOT_MEASURED
    assert check(rows, "quality", f"{RATE}, 3 layers").status == targets.NOT_MEASURED
    assert targets.overall(targets.evaluate(rows))["quality"] == targets.MISSED
    assert targets.overall(targets.evaluate([]))["quality"] == targets.NOT_MEASURED


def seeds(task, layers, cells, values):
    """Extra seeds 1, 2 at full budget for each (method, strategy) in `cells`."""
    return rows_of(*(record(task, m, s, layers, seed=seed, dev=0.97, test=v)
                     for (m, s), vs in zip(cells, values, strict=True)
                     for seed, v in zip((1, 2), vs, strict=True)), stage="E")


def test_depth_target_needs_three_seeds_unless_the_rows_decide():
    lead = {("graft", "distill"): 0.99}
    rows = grid(SENT, 2, dev=lead, test={("graft", "distill"): 0.97, ("drop-top", "distill"):
                                         0.96}, default=0.95)
    scope = f"{SENT}, 2 layers"
    assert check(rows, "depth", scope).status == targets.NOT_MEASURED  # one seed: no std yet
    best_base = stages.strongest_baseline(rows, SENT, 2)
    cells = [("graft", "distill"), best_base]
    tight = rows + seeds(SENT, 2, cells, [(0.971, 0.969), (0.951, 0.949)])
    assert check(tight, "depth", scope).status == targets.MET
    # drop-top (one seed) is 1 point behind; graft's seeds spread more than that.
    loose = rows + seeds(SENT, 2, cells, [(0.99, 0.95), (0.951, 0.949)])
    result = check(loose, "depth", scope)
    assert result.status == targets.MISSED and "closest: drop-top" in result.measured
    assert "none for drop-top (1 seed)" in result.measured  # its std is not known to be 0
    below = grid(SENT, 2, dev=lead, test={("drop-top", "distill"): 0.99})
    assert check(below, "depth", scope).status == targets.MISSED  # below: decided already
    level = grid(SENT, 3, dev={("graft", "distill"): 0.99})
    assert check(level, "depth", f"{SENT}, 3 layers").status == targets.MET  # not below any


def test_compute_target_reads_graft_at_a_quarter_budget():
    rows = grid(SENT, 3, dev={("graft", "distill"): 0.99, ("drop-top", "distill"): 0.97},
                test={("drop-top", "distill"): 0.97}, default=0.96)
    scope = f"{SENT}, 3 layers"
    assert check(rows, "compute", scope).status == targets.NOT_MEASURED
    lead = {("graft", "distill"): 0.99}
    short = curve_point(rows, SENT, 3, 0.25, dev=lead, test={("graft", "distill"): 0.965})
    assert check(rows + short, "compute", scope).status == targets.MISSED
    enough = curve_point(rows, SENT, 3, 0.125, dev=lead, test={("graft", "distill"): 0.972})
    result = check(rows + short + enough, "compute", scope)
    assert result.status == targets.MET and result.measured.endswith("at 1/8")
    # graft's row at a point is the strategy dev chose there, not the best on test
    other = curve_point(rows, SENT, 3, 0.125, dev=lead, test={("graft", "replace"): 0.99})
    assert check(rows + short + other, "compute", scope).status == targets.MISSED


def test_the_lever_table_shows_every_lever_beside_the_dev_choice_never_in_its_place():
    dev = {("graft", "finetune"): 0.99, ("graft", "replace"): 0.95}
    rows = grid(SENT, 2, dev=dev, test={("graft", "replace"): 0.991}, default=0.9)
    quarter = curve_point(rows, SENT, 2, 0.25, dev={("graft", "distill"): 0.97})
    table = levers.section(rows + quarter)[-1]
    full = next(line for line in table.splitlines() if line.startswith(f"| {SENT} | 2 | full"))
    cells = [c.strip() for c in full.strip("|").split("|")]
    assert cells[3:8] == ["**99.0 / 90.0**", "90.0 / 90.0", "90.0 / 90.0", "95.0 / 99.1",
                          "90.0 / 90.0"]  # finetune chosen on dev; replace leads on test
    assert cells[8].endswith(": 90.0 / 90.0")
    part = next(line for line in table.splitlines() if line.startswith(f"| {SENT} | 2 | 1/4"))
    cells = [c.strip() for c in part.strip("|").split("|")]
    assert cells[3] == "—" and cells[4] == "**97.0 / 90.0**"  # finetune is no curve candidate
    waiting = next(line for line in table.splitlines() if line.startswith(f"| {RATE} | 1 | full"))
    assert waiting.count("—") == len(stages.TRAINED) and "not yet chosen" in waiting


def test_fidelity_pools_test_and_out_of_domain_sets():
    lead = {("graft", "distill"): 0.99}
    only_test = grid(SENT, 3, dev=lead)
    assert check(only_test, "fidelity", f"{SENT}, 3 layers").status == targets.NOT_MEASURED
    rows = rows_of(*(grid_record(SENT, k, dev=lead.get((k.method, k.strategy), 0.95),
                                 agree=0.95,
                                 ood={s: 0.93 if k.method == "graft" else 0.90 for s in OOD})
                     for k in stages.grid([3])))
    assert check(rows, "fidelity", f"{SENT}, 3 layers").status == targets.MET
    worse = [dict(r, agreement=0.5) if r["method"] == "graft" and r["split"] in OOD else r
             for r in rows]
    assert check(worse, "fidelity", f"{SENT}, 3 layers").status == targets.MISSED
    rating = grid(RATE, 1, dev={("graft", "distill"): 0.99})  # regression: test only
    assert check(rating, "fidelity", f"{RATE}, 1 layer").status == targets.MISSED  # all equal


def test_speed_and_pipeline_targets():
    rows = grid(SENT, 3, speed=(1.99, 1.80))
    assert check(rows, "speed", "3 layers, batch 32").status == targets.MET  # >= 0.97 x 2
    assert check(rows, "speed", "3 layers, batch 1").status == targets.MISSED
    assert check(rows, "speed", "1 layer, batch 1").status == targets.NOT_MEASURED
    ratio = check(rows, "pipeline", "distillation epoch")
    assert ratio.status == targets.MET and "1.000×" in ratio.measured  # same seconds per step
    together = [{"kind": "speed", "task": task, "layers": 3, "batch": 1, "speed_up": up,
                 "ideal": 2.0} for task, up in ((SENT, 1.96), (RATE, 1.98))]
    verdict = check(rows + together, "speed", "3 layers, batch 1")  # the speed stage wins
    assert verdict.status == targets.MET and "median of 2 speed runs" in verdict.measured
    costs = [{"kind": "cost", "name": "analyze_seconds", "task": SENT, "value": 45.0},
             {"kind": "cost", "name": "distill_epoch_ratio", "value": 1.3}]
    assert check(rows + costs, "pipeline", "distillation epoch").status == targets.MISSED
    scope = "analyze, {} teacher, 2,000 examples"
    assert check(costs, "pipeline", scope.format(SENT)).status == targets.MET
    assert check(costs, "pipeline", scope.format(RATE)).status == targets.NOT_MEASURED
    assert check(costs, "pipeline", "heal step").status == targets.NOT_MEASURED
    healed = [{**costs[1], "heal_ratios": {"heal_all": 0.84, "heal_one_layer": 0.29}}]
    verdict = check(healed, "pipeline", "heal step")  # judged on the step --heal runs
    assert verdict.status == targets.MISSED and "0.29× one layer" in verdict.measured


def test_depth_cost_fit_recovers_fixed_and_per_layer_time():
    fixed, per_layer = 0.1, 0.15  # teacher: 0.1 + 6 * 0.15 = 1.0
    rows = [{"kind": "speed", "task": SENT, "layers": n, "batch": 32,
             "speed_up": 1.0 / (fixed + n * per_layer), "ideal": 6 / n} for n in (3, 2, 1)]
    fit = targets.depth_cost_fit(rows + [{**rows[0], "batch": 1}])  # one depth: no fit
    assert list(fit) == [32]
    assert fit[32] == pytest.approx((fixed, per_layer))
    assert "1-layer ceiling 4.00×" in "\n".join(render._fixed_cost(rows))


def test_suite_rows_hold_the_issue_keys_and_a_rerun_replaces_its_rows(tmp_path):
    rows = rows_of(record(SENT, "graft", "distill", 2, ood={s: 0.9 for s in OOD}), budget=0.5)
    assert {r["split"] for r in rows} == {"dev", "test", *OOD}
    for row in rows:
        assert all(k in row for k in ISSUE_KEYS)
        assert (row["budget"], row["run"], row["trained_steps"]) == (
            0.5, "L2-graft-distill-s0-b0.5", 795)
    store = offline.Store(tmp_path / "offline.json")
    store.put(rows, offline.of_kind("run", task=SENT, run=rows[0]["run"]))
    store.put(rows[:1], offline.of_kind("run", task=SENT, run=rows[0]["run"]))
    assert json.loads((tmp_path / "offline.json").read_text()) == json.loads(json.dumps(rows[:1]))


def test_two_suite_processes_sharing_the_results_file_keep_each_others_rows(tmp_path):
    first, second = (offline.Store(tmp_path / "offline.json") for _ in range(2))
    first.put([{"kind": "teacher", "task": SENT}], offline.of_kind("teacher", task=SENT))
    second.put([{"kind": "teacher", "task": "movie-rating"}],
               offline.of_kind("teacher", task="movie-rating"))
    assert [r["task"] for r in first.rows] == [SENT, "movie-rating"]


def test_suite_processes_sharing_a_stage_skip_the_runs_another_one_holds(tmp_path,
                                                                         monkeypatch):
    from lib.jsonstore import claim

    ran = []

    def fake_compress(teacher, task, *, layers, method, strategy, seed, heal, **kwargs):
        key = RunKey(method, strategy, layers, seed, heal=heal.steps if heal else 0)
        ran.append(key.name)
        return grid_record(task, key)

    monkeypatch.setattr(offline, "compress", fake_compress)
    monkeypatch.setattr(offline, "ensure_teacher", lambda *args: "teacher")
    suite = offline.Suite(work=tmp_path / "work", results=tmp_path / "offline.json")
    planned = stages.plan_stage("A", [])
    held = planned[0].key.name
    with claim(suite.claim_file(SENT, held)) as mine:
        assert mine
        with claim(suite.claim_file(SENT, held)) as other:
            assert not other  # a second holder is refused, not queued
        offline.run_stage(suite, "A", offline.Store(suite.results))
    assert held not in ran and len(ran) == len(planned) - 1
    assert {r["run"] for r in offline.Store(suite.results).rows} == set(ran)
    with claim(suite.claim_file(SENT, held)) as mine:
        assert mine  # released when its holder finished


def test_render_marks_every_target_from_the_rows_alone(tmp_path):
    rows = grid(SENT, 3, test={("graft", "distill"): 0.995}, dev={("graft", "distill"): 0.99})
    rows += grid(SENT, 2, test={("graft", "distill"): 0.95}, dev={("graft", "distill"): 0.99})
    rows += curve_point(rows, SENT, 3, 0.25, dev={("graft", "distill"): 0.99})
    results = tmp_path / "results" / "offline.json"
    results.parent.mkdir()
    results.write_text(json.dumps(rows))
    (results.parent / "ablations.json").write_text(json.dumps([
        {"ablation": "temperature", "variant": v, "task": SENT, "layers": 2, "method": "graft",
         "strategy": "distill", "seed": 0, "split": split, "metric": "accuracy",
         "value": 0.8, "retention": r, "agreement": 0.9, "note": "kept" if v == 2 else ""}
        for v, r in ((1, 0.95), (2, 0.97)) for split in ("dev", "test")]))
    page = render.write(results, tmp_path / "BENCHMARKS.md").read_text()
    assert "| quality | movie-sentiment, 3 layers | ≥ 99% | 99.50% (graft/distill, 1 seed) | " \
           "MET |" in page
    assert "| quality | movie-sentiment, 2 layers | ≥ 97% | 95.00% (graft/distill, 1 seed) | " \
           "MISSED |" in page
    assert "| quality | movie-rating, 1 layer | ≥ 92% | graft's grid not finished | " \
           "NOT YET MEASURED |" in page
    assert "| quality | graft + best strategy" in page and "| **MISSED** |" in page
    assert "| temperature | 1 | movie-sentiment | 2 | 1 | 95.0 | 90.0 | 95.0 |  |" in page
    assert "| temperature | 2 | movie-sentiment | 2 | 1 | 97.0 | 90.0 | 97.0 | kept |" in page
    figure = "results/figures/movie-sentiment-budget.png"  # relative to the page
    assert f"![movie-sentiment: retention vs training steps]({figure})" in page
    assert (tmp_path / figure).is_file()
    empty = render.write(tmp_path / "none.json", tmp_path / "EMPTY.md").read_text()
    assert "Nothing has run yet." in empty and " MET |" not in empty and "MISSED" not in empty


def test_dry_run_lists_the_plan_and_trains_nothing(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run must not train")

    monkeypatch.setattr(offline, "compress", refuse)
    monkeypatch.setattr(offline, "finetune", refuse)
    work = tmp_path / "work"
    done = work / "runs" / SENT / "L3-graft-none-s0"
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    offline.main(["--dry-run", "--stage", "A", "--stage", "D", "--work", str(work),
                  "--results", str(tmp_path / "offline.json"),
                  "--markdown", str(tmp_path / "B.md")])
    out = capsys.readouterr().out
    assert "L3-graft-none-s0" in out and "L3-graft-progressive-s0" in out
    assert "18 runs: 1 done, 17 to run, 0 pending" in out
    assert "36 runs: 0 done, 0 to run, 36 pending" in out and "teacher movie-sentiment: to " \
        "fine-tune" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # nothing written


def test_the_cost_stage_measures_distillation_steps_against_fine_tuning(tmp_path, monkeypatch):
    from lib import measure
    from tiny_task import save_tiny_teacher

    monkeypatch.setattr(measure, "COST_STEPS", 6)  # 3 warm-up steps are not timed
    row = measure.distill_cost(tmp_path / "cost.json", "fp32",
                               model=save_tiny_teacher(tmp_path / "teacher"))
    assert row["kind"] == "cost" and row["steps"] == 6 and row["arm"] == "distill_cached"
    assert row["ratios"]["finetune"] == 1.0 and row["value"] == row["ratios"]["distill_cached"]
    assert set(row["step_seconds"]) == {"finetune", "distill_cached", "distill_cached_hidden",
                                        "distill_live", "heal_all", "heal_one_layer"}
    assert set(row["heal_ratios"]) == {"heal_all", "heal_one_layer"}
    assert all(v > 0 for v in row["heal_ratios"].values())
    assert check([row], "pipeline", "heal step").status in (targets.MET, targets.MISSED)
    assert measure.distill_cost(tmp_path / "cost.json", "fp32") == row  # kept, not rerun
    text = "\n".join(render._pipeline([row]))
    assert "6 steps of batch 32" in text and "distill_cached" in text
    assert check([row], "pipeline", "distillation epoch").status in (targets.MET, targets.MISSED)


def test_analyze_is_timed_as_a_user_runs_it_and_the_timing_is_kept(tmp_path, monkeypatch):
    from lib import measure
    from tiny_task import save_tiny_teacher, write_tiny_task

    monkeypatch.setattr(measure, "ANALYZE_SAMPLES", 16)
    task = str(write_tiny_task(tmp_path / "task"))
    row = measure.time_analyze(save_tiny_teacher(tmp_path / "teacher"), task, tmp_path / "an")
    assert (row["kind"], row["name"], row["task"]) == ("cost", "analyze_seconds", task)
    assert row["value"] > 0 and (tmp_path / "an" / "analysis.json").is_file()
    kept = tmp_path / "an.json"
    kept.write_text(json.dumps({**row, "value": -1.0}))
    assert measure.time_analyze("not used again", task, tmp_path / "an")["value"] == -1.0
    again = measure.time_analyze(tmp_path / "teacher", task, tmp_path / "an", fresh=True)
    assert again["value"] > 0 and json.loads(kept.read_text()) == again


def test_the_speed_stage_times_teacher_and_students_together(tmp_path, monkeypatch):
    from lib import measure
    from tiny_task import save_tiny_teacher, write_tiny_task

    from layergraft.models import load_classifier, save_model
    from layergraft.surgery.graft import graft_model

    teacher = Path(save_tiny_teacher(tmp_path / "teacher"))
    model, tokenizer = load_classifier(str(teacher))
    students = []
    for layers in (2, 1):
        student, manifest = graft_model(model, layers=layers, method="drop-alternate")
        students.append(save_model(student, tokenizer, tmp_path / f"s{layers}", manifest=manifest))
    monkeypatch.setattr(measure, "SPEED_REPEATS", 2)
    rows = measure.speed_together(teacher, students, write_tiny_task(tmp_path / "task"), "fp32")
    assert {(r["layers"], r["batch"]) for r in rows} == {(2, 32), (2, 1), (1, 32), (1, 1)}
    assert all(r["kind"] == "speed" and r["speed_up"] > 0 for r in rows)
    assert {r["ideal"] for r in rows} == {model.config.num_hidden_layers / n for n in (2, 1)}
    assert all(0 < r["params"] < r["teacher_params"] and 0 < r["size_bytes"]
               < r["teacher_size_bytes"] for r in rows)


def test_a_costly_suite_scores_surgery_without_ood_and_times_only_trained_grafts(tmp_path,
                                                                                 monkeypatch):
    from lib import mpnet_plan
    from suites import mpnet

    asked = {}

    def fake_compress(teacher, task, *, layers, method, strategy, seed, speed, ood, **kwargs):
        asked[RunKey(method, strategy, layers, seed).name] = (speed, ood)
        return record(task, method, strategy, layers, seed=seed)

    monkeypatch.setattr(offline, "compress", fake_compress)
    monkeypatch.setattr(offline, "ensure_teacher", lambda *args: "teacher")
    suite = dataclasses.replace(mpnet.SUITE, work=tmp_path / "work", results=tmp_path / "m.json")
    store = offline.Store(suite.results)
    for stage in ("M0", "M1"):
        offline.run_planned(suite, mpnet_plan.plan(stage, store.rows), store)
    assert asked["L6-graft-none-s0"] == asked["L6-drop-top-none-s0"] == (False, False)
    assert asked["L4-drop-top-distill-s0"] == (False, True)
    assert len(asked) == 6 * 4 + 5 * 4
    assert all(p.pending for p in mpnet_plan.plan("M2", store.rows)) == (
        mpnet_plan.GRAFT_STRATEGY is None)
    # the default suite measures everything on every run
    assert offline.Suite().measures(RunKey("drop-top", "none", 3)) == {"speed": True, "ood": True}
    assert mpnet.SUITE.measures(RunKey("graft", "distill", 3)) == {"speed": True, "ood": True}


def test_a_stage_runs_what_waits_on_its_own_rows_in_the_same_call(tmp_path, monkeypatch):
    ran = []

    def fake_compress(teacher, task, *, layers, method, strategy, seed, **kwargs):
        ran.append((task, RunKey(method, strategy, layers, seed).name))
        return record(task, method, strategy, layers, seed=seed,
                      dev=0.9 if method == "graft" else 0.8)

    monkeypatch.setattr(offline, "compress", fake_compress)
    monkeypatch.setattr(offline, "ensure_teacher", lambda *args: "teacher")
    suite = offline.Suite(work=tmp_path / "work", results=tmp_path / "rows.json",
                          markdown=tmp_path / "BENCHMARKS.md")
    store = offline.Store(suite.results)
    offline.run_stage(suite, "H", store)
    planned = stages.plan_stage("H", store.rows)
    assert any(p.key.seed == 2 for p in planned) and not any(p.pending for p in planned)
    assert len(ran) == len(set(ran)) == len(planned)  # every run once, the seeds included


def test_the_12_layer_section_marks_issue_14s_targets_from_its_rows(tmp_path, monkeypatch):
    from lib import mpnet_plan as mpnet
    from report import mpnet_section

    monkeypatch.setattr(mpnet, "GRAFT_STRATEGY", "distill")
    graft_test = {6: 0.996, 4: 0.99, 3: 0.96, 2: 0.95}
    records = []
    for layers in mpnet.DEPTHS:
        for method in mpnet.METHODS:
            records.append(record(SENT, method, "none", layers, test=0.8, dev=0.8))
        seeds = (0, 1, 2) if layers in mpnet.SEEDED_DEPTHS else (0,)
        for seed in seeds:
            jitter = 0.002 * seed
            records.append(record(SENT, "graft", "distill", layers, seed=seed, dev=0.99,
                                  test=graft_test[layers] + jitter, ood={s: 0.95 for s in OOD}))
            records.append(record(SENT, "drop-alternate", "distill", layers, seed=seed, dev=0.98,
                                  test=0.95 + jitter, ood={s: 0.9 for s in OOD}))
        for method in mpnet.BASELINES[1:]:
            records.append(record(SENT, method, "distill", layers, dev=0.9, test=0.9,
                                  ood={s: 0.9 for s in OOD}))
    rows = rows_of(*records, stage="M1")
    path = tmp_path / "mpnet.json"
    path.write_text(json.dumps(rows))
    text = "\n".join(mpnet_section.section(path))
    status = {(c.target, c.scope): c.status
              for c in mpnet_section.evaluate(rows, targets.Results(rows))}
    assert status[("quality", "12 -> 6")] == status[("quality", "12 -> 4")] == targets.MET
    assert status[("quality", "12 -> 3")] == targets.MISSED  # 96.2% < 97%
    assert status[("depth", "12 -> 6")] == targets.MET
    # 3 layers: +1.0 point over drop-alternate, combined std 0.28: met
    assert status[("depth", "12 -> 3")] == targets.MET
    # 4 and 2 layers, one seed: the 3-layer stds are borrowed; level with a baseline misses
    assert status[("depth", "12 -> 4 (stds of 12 -> 3)")] == targets.MET
    assert status[("depth", "12 -> 2 (stds of 12 -> 3)")] == targets.MISSED
    assert all(status[("fidelity", f"12 -> {n}")] == targets.MET for n in mpnet.DEPTHS)
    assert status[("compute", "12 -> 6")] == targets.NOT_MEASURED  # no 1/8 or 1/4 rows
    assert "| graft | distill | 3 |" in text and "12 -> 2 layers, full budget" in text
    assert "Size and speed" not in text  # no interleaved speed run yet
    speed = [{"kind": "speed", "task": SENT, "model": "s6", "layers": 6, "batch": batch,
              "speed_up": up, "ideal": 2.0, "repeats": 15, "threads": 1, "params": 55_000_000,
              "size_bytes": 210 * 2**20, "teacher_params": 110_000_000,
              "teacher_size_bytes": 420 * 2**20} for batch, up in ((32, 1.98), (1, 1.9))]
    path.write_text(json.dumps(rows + speed))
    text = "\n".join(mpnet_section.section(path))
    assert "| 6 | 55.0M | 50% | 210.0 MiB | 1.98× | 1.90× |" in text
    status = {(c.target, c.scope): c.status
              for c in mpnet_section.evaluate(rows + speed, targets.Results(rows + speed))}
    assert status[("speed", "6 layers, batch 32")] == targets.MET  # 1.98 >= 0.97 x 2
    assert status[("speed", "6 layers, batch 1")] == targets.MISSED


def test_healing_names_its_runs_and_rows_and_the_retraining_free_stage_follows_dev():
    key = RunKey("graft", "distill", 3, 1, 0.25, heal=26)
    assert key.name == "L3-graft-distill+heal26-s1-b0.25"
    assert stages.healed_key("graft", 2).name == "L2-graft-heal-s0"
    healed = {**record(SENT, "graft", "distill", 3), "heal": {"steps": 26}}
    assert {r["strategy"] for r in rows_of(healed)} == {"distill+heal26"}

    first = stages.plan_stage("H", [])
    ready = [p for p in first if not p.pending]
    assert len(ready) == len(stages.TASKS) * len(stages.DEPTHS) * len(METHODS)
    assert all(p.key.strategy == "heal" and p.key.heal == stages.HEAL_STEPS for p in ready)
    dev = {m: 0.80 for m in METHODS} | {"drop-alternate": 0.85, "graft": 0.9}
    rows = rows_of(*(record(task, p.key.method, "heal", p.key.layers, dev=dev[p.key.method],
                            test=dev[p.key.method]) for task in stages.TASKS
                     for p in ready if p.task == task), stage="H")
    seeds = [p for p in stages.plan_stage("H", rows) if p.key.seed]
    assert not any(p.pending for p in seeds)
    assert {p.key.method for p in seeds} == {"graft", "drop-alternate"}
    # one seed of graft: not yet judged; three seeds at 90%: 2 layers met, 3 layers missed
    assert check(rows, "retraining-free", f"{SENT}, 3 layers").status == targets.NOT_MEASURED
    rows += rows_of(*(record(p.task, p.key.method, "heal", p.key.layers, seed=p.key.seed,
                             dev=0.9, test=dev[p.key.method]) for p in seeds), stage="H")
    assert check(rows, "retraining-free", f"{SENT}, 3 layers").status == targets.MISSED
    met = check(rows, "retraining-free", f"{SENT}, 2 layers")
    assert met.status == targets.MET and "drop-alternate" in met.measured


def test_paired_tests_compare_the_two_runs_on_the_same_examples(tmp_path):
    import numpy as np
    from lib import mpnet_plan, paired

    from layergraft.data.tasks import load_task
    from layergraft.objectives.runs import PREDICTIONS_NAME

    labels = np.asarray(load_task(SENT).splits["test"]["label"])
    right = np.eye(2)[labels]
    wrong_first_ten = right.copy()
    wrong_first_ten[:10] = right[:10, ::-1]
    for key, logits in ((RunKey("graft", "distill", 6), right),
                        (RunKey("drop-top", "distill", 6), wrong_first_ten)):
        folder = tmp_path / key.name
        folder.mkdir()
        np.savez(folder / PREDICTIONS_NAME, test=logits, teacher_test=right, dev=right[:5])

    def run_dir(task, key):
        return tmp_path / key.name

    configs = (("graft", "distill"), ("drop-top", "distill"))
    pairs = [(SENT, 6, configs), (SENT, 4, configs), (SENT, 3, None)]  # 4: no predictions
    rows = paired.paired_rows(pairs, run_dir)
    assert len(rows) == 1  # test only: dev and the teacher's logits are not compared
    row = rows[0]
    assert (row["layers"], row["split"], row["n"]) == (6, "test", len(labels))
    assert (row["only_a"], row["only_b"]) == (10, 0) and row["mcnemar_p"] < 0.01
    assert row["delta"] == pytest.approx(10 / len(labels))
    assert row["a_run"] == "graft/distill" and row["b_run"] == "drop-top/distill"
    table = "\n".join(paired.paired_table(rows, SENT))
    assert "| 6 | test | graft/distill vs drop-top/distill |" in table
    assert paired.paired_table(rows, RATE) == []
    # stored rows of a depth whose predictions are gone stay; the recomputed depth is replaced
    kept, stale = {**row, "layers": 4}, {**row, "delta": 0.5}
    same = paired.replaced_by(rows)
    assert [r for r in (kept, stale, {"kind": "run", "task": SENT, "layers": 6}) if same(r)] \
        == [stale]
    # the 12-layer stage compares graft with the strongest baseline once all baselines ran
    assert all(c is None for _, _, c in mpnet_plan.paired_configs([]))
    # a stored pair whose runs are no longer the chosen ones goes; the chosen one stays
    moved = paired.outdated([(SENT, 6, (("graft", "heal"), ("drop-top", "distill"))),
                             (SENT, 4, configs), (SENT, 3, None)])
    assert [r for r in (row, kept, {**row, "layers": 3}, {**row, "layers": 2}) if moved(r)] \
        == [row, {**row, "layers": 3}]


def test_a_run_whose_rows_are_committed_is_not_redone_on_a_new_machine(tmp_path,
                                                                     monkeypatch):
    """The work folder is gone (a new session); the rows' settings digest decides."""
    from lib import recorded

    ran, defaults = [], {"lr": 4e-4}

    def fake_compress(teacher, task, *, layers, method, strategy, seed, heal, out_dir,
                      dry_run=False, **kwargs):
        key = RunKey(method, strategy, layers, seed, heal=heal.steps if heal else 0)
        settings = {"teacher": teacher, "teacher_content": f"bytes of {teacher}",
                    "run": key.name, **defaults}
        if dry_run:
            return {"status": "to do", "out": str(out_dir), "settings": settings}
        ran.append(key.name)
        return {**grid_record(task, key), "settings": settings}

    monkeypatch.setattr(offline, "compress", fake_compress)
    monkeypatch.setattr(offline, "ensure_teacher", lambda suite, task, store: f"{suite.work}/t")
    first = offline.Suite(work=tmp_path / "one", results=tmp_path / "rows.json",
                          markdown=tmp_path / "BENCHMARKS.md")
    store = offline.Store(first.results)
    offline.run_stage(first, "A", store)
    planned = len(stages.plan_stage("A", []))
    assert len(ran) == planned and all(r.get("settings_digest") for r in store.rows)
    # a new machine: another work folder, a teacher made again by the same recipe elsewhere
    second = dataclasses.replace(first, work=tmp_path / "two")
    offline.run_stage(second, "A", store)
    assert len(ran) == planned
    defaults["lr"] = 1e-4  # a package default changed: every run is redone
    offline.run_stage(second, "A", store)
    assert len(ran) == 2 * planned
    other = recorded.settings_digest({"teacher": "a", "lr": 1}, second.teacher_recipe(SENT))
    assert other == recorded.settings_digest({"teacher": "b", "lr": 1},
                                             second.teacher_recipe(SENT))
    assert other != recorded.settings_digest({"teacher": "a", "lr": 1},
                                             second.teacher_recipe(RATE))


def test_paired_tests_read_the_kept_predictions_when_the_work_folder_is_gone(tmp_path):
    import numpy as np
    from lib import recorded

    from layergraft.objectives.runs import PREDICTIONS_NAME

    suite = offline.Suite(work=tmp_path / "work", results=tmp_path / "results" / "rows.json")
    key = RunKey("graft", "distill", 3)
    run_dir = suite.run_dir(SENT, key)
    run_dir.mkdir(parents=True)
    logits = np.arange(12.0).reshape(6, 2)
    np.savez(run_dir / PREDICTIONS_NAME, test=logits, dev=logits, teacher_test=logits)
    assert suite.predictions_dir(SENT, key) == run_dir
    kept = suite.kept_predictions(SENT, key)
    recorded.keep_predictions(run_dir, kept)
    assert kept == tmp_path / "results" / "predictions" / "rows" / SENT / key.name
    (run_dir / PREDICTIONS_NAME).unlink()
    assert suite.predictions_dir(SENT, key) == kept
    with np.load(kept / PREDICTIONS_NAME) as copy:  # only what paired tests compare
        assert copy.files == ["test"] and np.array_equal(copy["test"], logits)
    assert [p.name for p in kept.iterdir()] == [PREDICTIONS_NAME]  # no partial copy left


def test_rows_from_before_the_rerun_are_counted_apart():
    """A row without a settings digest predates the rerun: not done, but said to be shown."""
    rows = grid(SENT, 3)
    old = rows[0]["run"]
    rows = [{k: v for k, v in r.items() if k != "settings_digest"} if r["run"] == old else r
            for r in rows]
    env = {"kind": "environment", "cpu": "AMD EPYC", "cores": 2, "torch_threads": 1,
           "device": "cpu", "platform": "Linux", "versions": {"torch": "2.13.0"},
           "commit": "abc", "updated": "2026-12-05"}
    text = "\n".join(render._environment([env, *rows]))
    planned = len(stages.plan_stage("A", rows))
    assert f"| {planned - 1} / {planned} |" in text
    assert "their runs replace them: 1 of stage A" in text
    assert "replace them" not in "\n".join(render._environment([env, *grid(SENT, 3)]))


def test_the_speed_stage_names_every_student_it_cannot_time_here(tmp_path):
    suite = offline.Suite(work=tmp_path / "work", results=tmp_path / "offline.json")
    finished = suite.run_dir(SENT, RunKey("graft", "distill", 2, 0))
    finished.mkdir(parents=True)
    (finished / offline.RESULTS_NAME).write_text("{}")
    present, missing = offline.speed_students(suite, SENT)
    assert present == [finished]
    assert len(missing) == len(offline.DEPTHS) - 1
    assert all("another machine" in line and "L2-" not in line for line in missing)


def test_the_speed_section_says_on_which_cpu_and_when_each_task_was_timed():
    row = {"kind": "speed", "task": SENT, "layers": 3, "batch": 32, "speed_up": 1.9,
           "ideal": 2.0, "threads": 1}
    rows = [{**row, "cpu": "Xeon (AVX512)", "measured": "2026-12-06T20:00:00+00:00"},
            {**row, "task": "movie-rating"}]
    line = render._speed_machines(rows)[0]
    assert f"{SENT}: Xeon (AVX512), 1 thread(s), 2026-12-06T20:00:00+00:00" in line
    assert "movie-rating: CPU not recorded" in line
