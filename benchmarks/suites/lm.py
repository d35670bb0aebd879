"""Issue 34's LLM stage: SmolLM2-135M-Instruct (`layergraft assets smollm2`) cut from 30 to 22
and 15 layers by graft and every decoder baseline (shortgpt, angular, sleb, drop-last, laco,
streamline, random), with no training, healed, and distilled on movie-text, one token budget
for every method (`lib/lm_plan.py`), scored on movie-text test and editorials-text.

    python benchmarks/lm.py                 # every stage below, in order (resumable)
    python benchmarks/lm.py --stage L2      # one stage
    python benchmarks/lm.py --dry-run       # what is done and left, with estimated hours

Start one process per core (`OMP_NUM_THREADS=1` each): runs are claimed by locks under
benchmarks/work/lm/claims/, each a `compress(..., objective="lm")` folder under
benchmarks/work/lm/runs/ (git-ignored). After every run its row replaces its old one in
benchmarks/results/lm.json (atomically) with the digest of its settings, so a new machine
redoes only what changed (`lib/recorded.py`); BENCHMARKS.md is rendered after each stage.
Stages: L0 surgery only, L1 healing alone, L2 distillation, L3 seeds 1 and 2 for graft and
the strongest baseline (chosen on seed-0 dev perplexity, never on test). Only graft's
distilled seed-0 students are timed (every student of a depth has the same shape).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib import lm_plan as lm
from lib.jsonstore import claim, read_rows, update_rows
from lib.paths import REPO, RESULTS
from lib.paths import WORK as BENCH_WORK
from lib.recorded import settings_digest
from lib.stagecli import plan_line, stage_parser
from lib.stages import Planned
from report import render

from layergraft.assets import smollm2_path
from layergraft.errors import LayergraftError
from layergraft.pipeline.compare import RunKey
from layergraft.pipeline.compress import compress
from layergraft.training.heal import HealConfig
from layergraft.training.train import TrainConfig

RESULTS_FILE = RESULTS / "lm.json"
WORK = BENCH_WORK / "lm"
RECIPE = {"model": lm.MODEL}  # the teacher is the built-in asset itself, by name


def options(key: RunKey, work: Path = WORK, extra: Mapping = {}) -> dict:  # noqa: B006
    """compress's keyword arguments for one run: the same text, windows and budget for all
    (`extra` replaces some: the tests' tiny text)."""
    return {"objective": "lm", "layers": key.layers, "method": key.method,
            "strategy": key.strategy, "seed": key.seed, "out_dir": work / "runs" / key.name,
            "budget": f"{lm.DISTILL_TOKENS} tokens", "precision": "fp32", "device": "cpu",
            "training": TrainConfig(output_dir="", learning_rate=lm.LEARNING_RATE,
                                    batch_size=lm.BATCH, max_length=lm.BLOCK),
            "heal": HealConfig(steps=key.heal, batch_size=lm.HEAL_BATCH) if key.heal else None,
            "eval_windows": lm.EVAL_WINDOWS, "ood_texts": (lm.OOD,),
            "speed": (key.method, key.strategy, key.seed) == ("graft", "distill", 0),
            "cache_dir": work / "cache", "progress": False, "replace_other_runs": True, **extra}


def run_row(record: Mapping, planned: Planned, digest: str) -> dict:
    """One flat row per run: what the section's tables and targets read."""
    key, block = planned.key, record["text"]["block_length"]
    heal, training = record.get("heal") or {}, record.get("training") or {}
    heal_tokens = heal.get("steps", 0) * heal.get("config", {}).get("batch_size", 0) * block
    speed = record.get("speed") or {}
    row = {"kind": "run", "stage": planned.stage, "run": key.name, "method": key.method,
           "strategy": key.strategy, "layers": key.layers, "seed": key.seed,
           "teacher_layers": record["teacher_layers"],
           "teacher_content": record["settings"]["teacher_content"],
           "tokens": training.get("tokens", 0) + heal_tokens, "heal_tokens": heal_tokens,
           "train_seconds": training.get("seconds", 0.0) + heal.get("seconds", 0.0),
           "run_seconds": record.get("seconds"), "settings_digest": digest,
           "window": record["test"]["window"], "windows": record["test"]["windows"],
           **{f"{f}_ratio": speed.get(f"{f}_ratio") for f in ("prefill", "decode", "ideal")}}
    for split, scores in (("dev", record["dev"]), ("test", record["test"]),
                          ("ood", next(iter(record["ood"].values())))):
        row |= {f"{split}_ppl": scores["student_perplexity"],
                f"teacher_{split}_ppl": scores["teacher_perplexity"],
                f"{split}_kl": scores["kl"], f"{split}_agreement": scores["agreement"]}
    return row


def model() -> str | None:
    """The teacher's name for compress, or None when `layergraft assets smollm2` has not run
    here (the dry run still works: it cannot read settings, so it judges by rows)."""
    try:
        smollm2_path()
    except LayergraftError:
        return None
    return lm.MODEL


def state(planned: Planned, rows: Sequence[Mapping], teacher: str | None,
          work: Path = WORK, extra: Mapping = {}) -> str:  # noqa: B006 (read only)
    """done (its folder finished, or lm.json holds its row under today's settings), todo or
    pending. Without the model here the settings cannot be read: a row of the run counts."""
    if planned.pending:
        return "pending"
    mine = [r for r in rows if r.get("kind") == "run" and r["run"] == planned.key.name]
    if teacher is None:
        return "done" if mine else "todo"
    check = compress(teacher, **options(planned.key, work, extra), dry_run=True)
    digest = settings_digest(check["settings"], RECIPE)
    done = check["status"] == "done" or any(r.get("settings_digest") == digest for r in mine)
    return "done" if done else "todo"


def run_one(planned: Planned, results: Path = RESULTS_FILE, work: Path = WORK,
            teacher: str = lm.MODEL, extra: Mapping = {}) -> dict | None:  # noqa: B006
    """One claimed run, its row replacing the old one (a failure is recorded instead);
    None when another process holds it."""
    name = planned.key.name
    with claim(work / "claims" / f"{name}.lock") as mine:
        if not mine:
            return None
        try:
            record = compress(teacher, **options(planned.key, work, extra))
        except Exception as error:  # recorded, and the stage goes on: a rerun retries it
            traceback.print_exc()
            row = {"kind": "failure", "run": name, "error": f"{type(error).__name__}: {error}"}
        else:
            row = run_row(record, planned, settings_digest(record["settings"], RECIPE))
        update_rows(results, lambda old: [r for r in old if r["run"] != name] + [row])
        return row


def run_stage(stage: str, teacher: str, results: Path = RESULTS_FILE, work: Path = WORK,
              extra: Mapping = {}) -> None:  # noqa: B006 (read only)
    """Every ready run of the stage not done; L3 is planned again as its choices land."""
    tried: set[str] = set()
    while True:
        rows = read_rows(results)
        ready = [p for p in lm.plan(stage, rows) if not p.pending and p.key.name not in tried]
        if not ready:
            return
        for planned in ready:
            tried.add(planned.key.name)
            if state(planned, read_rows(results), teacher, work, extra) == "todo":
                run_one(planned, results, work, teacher, extra)


def dry_run(stages: Sequence[str], rows: Sequence[Mapping], teacher: str | None,
            work: Path = WORK) -> str:
    """Every planned run with its state, and the single-core hours left."""
    lines = [f"teacher {lm.MODEL}: " + ("present" if teacher else "absent (layergraft "
                                        "assets smollm2); runs judged by their rows alone"),
             f"budget: {lm.budget_line()}"]
    total = 0.0
    for stage in stages:
        planned = lm.plan(stage, rows)
        states = [state(p, rows, teacher, work) for p in planned]
        hours = sum(lm.estimated_hours(rows, p.key) for p, s in zip(planned, states,
                                                                     strict=True) if s != "done")
        total += hours
        lines.append(f"\nstage {stage}: {lm.STAGES[stage]}")
        lines += [plan_line(p.key.name, p.pending, s == "done", width=36)
                  for p, s in zip(planned, states, strict=True)]
        lines.append(f"  {len(planned)} runs: {states.count('done')} done, "
                     f"{states.count('todo')} to do, {states.count('pending')} pending; "
                     f"about {hours:.1f} single-core h left")
    lines.append(f"\nabout {total:.1f} single-core hours left ({total / 2:.1f} h on 2 processes)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = stage_parser(__doc__, lm.STAGES).parse_args(argv)
    stages, teacher = args.stage or list(lm.STAGES), model()
    if args.dry_run:
        print(dry_run(stages, read_rows(RESULTS_FILE), teacher))
        return
    if teacher is None:
        raise SystemExit(f"{lm.MODEL} is not here: run `layergraft assets smollm2` first")
    for stage in stages:
        run_stage(stage, teacher)
        render.write(RESULTS / "offline.json", REPO / "BENCHMARKS.md")
