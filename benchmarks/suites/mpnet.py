"""Issue 14's 12-layer stage: all-mpnet-base-v2 fine-tuned on movie-sentiment, cut to 6/4/3/2.

    python benchmarks/mpnet.py                  # every stage below, in order (resumable)
    python benchmarks/mpnet.py --stage M1       # one stage
    python benchmarks/mpnet.py --dry-run        # what is planned and what is done

The same machinery as benchmarks/offline.py (runs claimed by locks, so one process per core
can share the work; rows replaced atomically in benchmarks/results/mpnet.json), with its own
work folder (benchmarks/work/mpnet/) and settings sized for a 109M-parameter teacher on two
CPU cores: length-grouped batches (movie sentences: median 26, 99th percentile 55, longest 79
MPNet tokens, so the usual max length of 128 truncates nothing), fp32 on every machine, the
teacher's outputs cached once. Fetch the model first: `layergraft assets mpnet`.

What keeps it within issue 14's 12 single-core hours (measured on an AMD EPYC, AVX-512, one
thread per process, two processes, fp32: a teacher training step of batch 32 takes 8-12 s,
and the first surgery-only runs, scored on dev, test and the three out-of-domain sets (15.2k
sentences) and timed, took 11-29 min each):
- the full budget is one epoch of distillation (265 steps), not the MiniLM suite's three
  (the teacher itself was fine-tuned for two); the budget curve's points are shares of it;
- surgery-only rows are scored on dev and test only (out-of-domain agreement is a target of
  the trained students);
- only graft's trained students are timed (every student of a depth has the same shape).
bf16 autocast trains ~2.2x faster on a CPU with native bf16, but the stage spans sessions on
CPUs that change, and one table does not mix precisions.

Stages, run in this order:
- M0: surgery only, every method at every depth (no training; minutes each).
- M2: graft with its best strategy (chosen on the MiniLM dev ablations of issue 13,
  `mpnet_plan.GRAFT_STRATEGY`) at every depth.
- M1: every baseline distilled with the full budget at every depth.
- M3: the budget curve at 6 layers (1/8, 1/4, 1/2 of the full budget): graft and the
  strongest baseline (chosen on dev at the full budget).
- M4: seeds 1 and 2 for graft and the strongest baseline at 6 and 3 layers.
After each stage the teacher and graft's seed-0 student of every depth are timed together in
one interleaved run (batch 32 and 1, dev lengths), again whenever that set of students
changed (`--remeasure`: again anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

from lib import measure
from lib.mpnet_plan import DEPTHS, FULL_BUDGET, GRAFT_STRATEGY, STAGES, TASK, paired_configs, plan
from lib.paired import refresh_paired
from lib.stagecli import plan_line, stage_parser
from report import render

from layergraft.assets import mpnet_path
from layergraft.errors import LayergraftError
from layergraft.pipeline.finetune import RESULTS_NAME as TEACHER_RESULTS
from suites.offline import ROOT, Store, Suite, of_kind, run_planned, run_state, time_students

SUITE = Suite(work=ROOT / "benchmarks" / "work" / "mpnet",
              results=ROOT / "benchmarks" / "results" / "mpnet.json",
              markdown=ROOT / "benchmarks" / "results" / "mpnet.md",
              model="mpnet", group_by_length=True, full_budget=FULL_BUDGET,
              ood_after_surgery=False, timed_methods=("graft",))


def dry_run(stages: Sequence[str], rows: Sequence[dict]) -> str:
    present = (SUITE.teacher(TASK) / TEACHER_RESULTS).is_file()
    lines = [f"teacher: {'present' if present else 'to fine-tune before the first run left'}"]
    for stage in stages:
        planned = plan(stage, rows)
        lines.append(f"\nstage {stage}: {STAGES[stage]}")
        lines += [plan_line(p.key.name, p.pending, run_state(SUITE, p, rows) == "done",
                            width=48) for p in planned]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__, STAGES)
    parser.add_argument("--remeasure", action="store_true",
                        help="Time the graft students again even if their set is unchanged.")
    args = parser.parse_args(argv)
    try:  # the plan itself reads the model (benchmarks/lib/recorded.py): fetched on request only
        mpnet_path()
    except LayergraftError as missing:
        parser.exit(2, f"{missing}\n")
    stages = args.stage or list(STAGES)
    store = Store(SUITE.results)
    if args.dry_run:
        print(dry_run(stages, store.rows))
        return
    for stage in stages:
        run_planned(SUITE, plan(stage, store.rows), store)
        if GRAFT_STRATEGY:
            time_students(SUITE, TASK, store, args.remeasure, DEPTHS, GRAFT_STRATEGY)
        refresh_paired(store, paired_configs(store.rows), SUITE.predictions_dir)
        store.put([measure.environment()], of_kind("environment"))
        render.write(Suite().results, Suite().markdown)  # BENCHMARKS.md's 12-layer section

