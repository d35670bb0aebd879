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
thread, fp32: a 12-layer training step of batch 32 takes ~10 s, and scoring a 6-layer student
on dev, test and the three out-of-domain sets (15.2k sentences) ~7 min):
- the full budget is one epoch of distillation (265 steps), not the MiniLM suite's three
  (the teacher itself was fine-tuned for two); the budget curve's points are shares of it;
- surgery-only rows are scored on dev and test only (out-of-domain agreement is a target of
  the trained students);
- only graft's trained students are timed (every student of a depth has the same shape).
bf16 autocast trains ~2.2x faster on a CPU with native bf16, but the stage spans sessions on
CPUs that change, and one table does not mix precisions.

Stages:
- M0: surgery only, every method at every depth (no training; minutes each).
- M1: every baseline distilled with the full budget at every depth.
- M2: graft with its best strategy (chosen on the MiniLM dev ablations of issue 13) at every
  depth; pending until `GRAFT_STRATEGY` is set.
- M3: the budget curve at 6 layers (1/8, 1/4, 1/2 of the full budget): graft and the
  strongest baseline (chosen on dev at the full budget).
- M4: seeds 1 and 2 for graft and the strongest baseline at 6 and 3 layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import measure
from offline import ROOT, Store, Suite, of_kind, run_planned
from stagecli import plan_line, stage_parser
from stages import Planned, dev_retention

from layergraft.pipeline.compare import RunKey
from layergraft.pipeline.finetune import RESULTS_NAME as TEACHER_RESULTS
from layergraft.pipeline.runs import RESULTS_NAME

TASK = "movie-sentiment"
DEPTHS = (6, 4, 3, 2)
BASELINES = ("drop-alternate", "drop-top", "drop-similar", "random", "average")
METHODS = ("graft", *BASELINES)
GRAFT_STRATEGY: str | None = None  # set once issue 13's ablations have chosen it on dev
CURVE_BUDGETS = (0.25, 0.125, 0.5)
SEEDED_DEPTHS, EXTRA_SEEDS = (6, 3), (1, 2)
STAGES = {
    "M0": "surgery only: every method at 6, 4, 3 and 2 layers",
    "M1": "every baseline distilled with the full budget at every depth",
    "M2": "graft with its best strategy at every depth",
    "M3": "budget curve at 6 layers: graft and the strongest baseline",
    "M4": "seeds 1 and 2 for graft and the strongest baseline at 6 and 3 layers",
}
FULL_BUDGET = "1 epoch"  # of distillation; why one, not the MiniLM suite's three: see above
SUITE = Suite(work=ROOT / "benchmarks" / "work" / "mpnet",
              results=ROOT / "benchmarks" / "results" / "mpnet.json",
              markdown=ROOT / "benchmarks" / "results" / "mpnet.md",
              model="mpnet", group_by_length=True, full_budget=FULL_BUDGET,
              ood_after_surgery=False, timed_methods=("graft",))


def strongest_baseline(rows: Sequence[dict], layers: int) -> str | None:
    """The distilled baseline with the best dev accuracy retention at the full budget."""
    scores = {m: dev_retention(rows, TASK, layers, m, "distill") for m in BASELINES}
    if any(v is None for v in scores.values()):
        return None
    return max(scores, key=lambda m: scores[m])


def plan(stage: str, rows: Sequence[dict]) -> list[Planned]:
    if stage == "M0":
        return [Planned(stage, TASK, RunKey(m, "none", n)) for n in DEPTHS for m in METHODS]
    if stage == "M1":
        return [Planned(stage, TASK, RunKey(m, "distill", n)) for n in DEPTHS for m in BASELINES]
    waiting = None if GRAFT_STRATEGY else "graft's strategy (issue 13)"
    graft = RunKey("graft", GRAFT_STRATEGY or "<best strategy>", 6)
    if stage == "M2":
        return [Planned(stage, TASK, RunKey("graft", graft.strategy, n), waiting)
                for n in DEPTHS]
    planned = []
    depths = (6,) if stage == "M3" else SEEDED_DEPTHS
    for layers in depths:
        rival = strongest_baseline(rows, layers)
        pending = waiting or (None if rival else f"the M1 baselines at {layers} layers")
        configs = (("graft", graft.strategy), (rival or "<strongest baseline>", "distill"))
        for method, strategy in configs:
            if stage == "M3":
                planned += [Planned(stage, TASK, RunKey(method, strategy, layers, 0, b), pending)
                            for b in CURVE_BUDGETS]
            else:
                planned += [Planned(stage, TASK, RunKey(method, strategy, layers, s), pending)
                            for s in EXTRA_SEEDS]
    return planned


def dry_run(stages: Sequence[str], rows: Sequence[dict]) -> str:
    present = (SUITE.teacher(TASK) / TEACHER_RESULTS).is_file()
    lines = [f"teacher: {'present' if present else 'to fine-tune'}"]
    for stage in stages:
        planned = plan(stage, rows)
        lines.append(f"\nstage {stage}: {STAGES[stage]}")
        lines += [plan_line(p.key.name, p.pending,
                            (SUITE.run_dir(TASK, p.key) / RESULTS_NAME).is_file(), width=48)
                  for p in planned]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = stage_parser(__doc__, STAGES).parse_args(argv)
    stages = args.stage or list(STAGES)
    store = Store(SUITE.results)
    if args.dry_run:
        print(dry_run(stages, store.rows))
        return
    for stage in stages:
        run_planned(SUITE, plan(stage, store.rows), store)
        store.put([measure.environment()], of_kind("environment"))


if __name__ == "__main__":
    main()
