"""Issue 32's default recipe as a user meets it: `layergraft compress TEACHER --task T
--layers N` with no method, rate or plan, i.e. `--method auto` (graft at its own rate and plan
against drop-top and drop-alternate at theirs, each probed at 1/8 of the budget on dev, the
best trained at the full budget), at each suite's full budget.

    cd benchmarks && OMP_NUM_THREADS=1 nohup ../.venv/bin/python defaults.py &   # twice
    python benchmarks/defaults.py --dry-run        # every run: done / to do
    python benchmarks/defaults.py --only mpnet     # or minilm: one teacher's cells only

Why: the older suites' rows were made under the old defaults (graft at 4e-4), and on the
12-layer MPNet drop-top beat them; this stage measures what the new default gives where those
suites measured graft and the baselines. In plan order (lib/defaults_plan.py): MPNet
movie-sentiment 12 -> 6 (seeds 0-2); the MiniLM teachers of both tasks at 3, 2, 1 layers
(seeds 0-2); MPNet movie-sentiment at 4, 3, 2 (seeds 0-2); MPNet movie-rating at 6 and 3
(seed 0; its teacher is fine-tuned first by the 12-layer suite's recipe when missing). Each
run is the suite's teacher, full budget, precision, length grouping and cache folder; dev and
test are scored, no out-of-domain sets (ood=False, to keep the cost down; the probes skip them
too) and no timing.

Start one process per core: each run is claimed by a lock, its folder is
benchmarks/work/defaults/<model>-<task>-L<layers>-s<seed> (git-ignored, resumable), and its
dev and test rows go into benchmarks/results/defaults.json (atomically) with what the default
chose and what its probes cost. A later seed waits for its cell's seed 0, which makes the
probes (cached under the suite's cache folder, probes/); the other seeds reuse them. Rough
cost on the 2-core EPYC: about 17 single-core hours (8-9 h on two cores), two thirds of it
probes: 16-18 probes per cell (MiniLM 1-3 min each, MPNet 3-5 min) before its seed 0, a
full-budget run per seed (MiniLM 3-10 min, MPNet 6-20 min), and the MPNet movie-rating
teacher (about 1.4 h) and, where missing, the MiniLM one (about 0.5 h).
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib.defaults_plan import CELLS, MODELS, Cell, done, identity, next_run, waits
from lib.jsonstore import claim, read_rows, update_rows
from lib.measure import cpu_name
from lib.paths import RESULTS as RESULTS_DIR
from lib.paths import WORK as WORK_DIR
from lib.stagecli import plan_line

from layergraft import api
from layergraft.pipeline.compare import record_rows
from layergraft.pipeline.finetune import RESULTS_NAME as TEACHER_RESULTS
from layergraft.training.budget import Budget
from layergraft.training.train import student_training
from suites import mpnet
from suites.offline import Suite, make_teacher

RESULTS = RESULTS_DIR / "defaults.json"
WORK = WORK_DIR / "defaults"
SUITES: Mapping[str, Suite] = {"mpnet": mpnet.SUITE, "minilm": Suite()}


def run_dir(cell: Cell, seed: int) -> Path:
    return WORK / f"{cell.slug}-s{seed}"


def compress_options(cell: Cell, seed: int) -> dict:
    """`api.compress`'s keyword arguments for one run: the suite's settings, and no method,
    learning rate or plan, so that the default recipe (auto) chooses them."""
    suite = SUITES[cell.model]
    return {"layers": cell.layers, "seed": seed, "out": run_dir(cell, seed),
            "budget": Budget.parse(suite.full_budget), "precision": suite.precision,
            "cache_dir": suite.work / "cache",
            "training": student_training(group_by_length=suite.group_by_length),
            "speed": False, "ood": False, "progress": False, "replace_other_runs": True}


def cell_rows(record: Mapping, cell: Cell) -> list[dict]:
    """The run's dev and test rows, with what the default chose and what it cost."""
    choices = record["choices"]
    picked = choices["method"]
    chosen = picked["chosen"]
    extra = {"model": cell.model, "chosen_method": chosen,
             "chosen_plan": (choices.get("plan") or {}).get("chosen"),  # drops have none
             "chosen_lr": picked["recipes"][chosen]["learning_rate"],
             "probe_dev_retention": picked["dev_retention"], "probe_recipes": picked["recipes"],
             "probe_budget": picked["budget"], "probe_seconds": picked["seconds"],
             "run_seconds": record["seconds"],
             "teacher_content": record["settings"]["teacher_content"],
             "cpu": f"{cpu_name()} ({record['runtime'].get('cpu_capability')})"}
    return [{**row, **extra} for row in record_rows(record, 1.0)
            if row["split"] in ("dev", "test")]


def run_one(cell: Cell, seed: int) -> list[dict]:
    """One run of the user's one command, its teacher made first when missing."""
    teacher = make_teacher(SUITES[cell.model], cell.task)
    record = api.compress(str(teacher), cell.task, **compress_options(cell, seed))
    rows = cell_rows(record, cell)
    key = (cell.model, cell.task, cell.layers, seed)
    update_rows(RESULTS, lambda old: [r for r in old if identity(r) != key] + rows)
    return rows


def dry_run(cells: Sequence[Cell], rows: Sequence[Mapping]) -> str:
    """Every run, done or to do (a later seed: after seed 0, whose probes it reuses), and
    whether each teacher is on this machine; loads and trains nothing."""
    lines = []
    for model, task in dict.fromkeys((c.model, c.task) for c in cells):
        present = (SUITES[model].teacher(task) / TEACHER_RESULTS).is_file()
        lines.append(f"teacher {model} {task}: "
                     f"{'present' if present else 'to fine-tune before its first run'}")
    runs = [(c, s) for c in cells for s in c.seeds]
    left = sum(not done(rows, c, s) for c, s in runs)
    lines += [plan_line(f"{c.slug} seed {s}", None, done(rows, c, s), width=36)
              + (" (after seed 0)" if waits(rows, c, s) else "") for c, s in runs]
    lines.append(f"{len(runs) - left} of {len(runs)} runs done, {left} to do")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=MODELS, help="only this teacher's cells")
    parser.add_argument("--dry-run", action="store_true",
                        help="Print every run as done / to do; run nothing.")
    args = parser.parse_args(argv)
    cells = [c for c in CELLS if args.only in (None, c.model)]
    if args.dry_run:
        print(dry_run(cells, read_rows(RESULTS)))
        return
    tried: set[tuple[str, int]] = set()
    while (item := next_run(cells, read_rows(RESULTS), tried)) is not None:
        cell, seed = item
        tried.add((cell.slug, seed))
        with claim(WORK / "claims" / f"{run_dir(cell, seed).name}.lock") as mine:
            if not mine or done(read_rows(RESULTS), cell, seed):
                continue  # another process runs it, or just finished it
            try:
                rows = run_one(cell, seed)
            except Exception:  # a rerun retries it; the other cells go on
                traceback.print_exc()
                continue
        test = next(r for r in rows if r["split"] == "test" and r["metric"] == cell.metric)
        print(f"{cell.slug} seed {seed}: {test['chosen_method']} "
              f"(plan {test['chosen_plan']}, lr {test['chosen_lr']:g}), test retention "
              f"{100 * test['retention']:.2f}%", flush=True)
