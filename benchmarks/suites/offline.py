"""Issue 5's offline benchmark suite in one resumable command; regenerates BENCHMARKS.md.

    python benchmarks/offline.py                         # every stage, in priority order
    python benchmarks/offline.py --stage A --stage cost  # only these stages
    python benchmarks/offline.py --dry-run               # the plan and what is done; no training
    python benchmarks/offline.py --stage cost --stage speed --remeasure  # timings again, alone

Teachers (the offline MiniLM fine-tuned on each task, best dev epoch) are made first when
missing. Every run is a `layergraft.pipeline.compress.compress` call with its own folder
under benchmarks/work/runs/ (git-ignored), named and budgeted by
`layergraft.pipeline.compare.RunKey`, so a rerun reuses every finished run and resumes an
unfinished one from its checkpoints: interrupt it at any time. A run made with other
settings (a package default changed since) is redone. The work folder does not outlive the
machine, the committed results do: a run whose rows in offline.json carry the digest of
today's settings is not redone on a new machine, and the predictions paired tests need are
kept under benchmarks/results/predictions/ (benchmarks/lib/recorded.py). After every run its
rows replace its old ones in offline.json (written atomically); after every stage the
paired tests and the environment row are refreshed and BENCHMARKS.md is rendered from that
file alone (benchmarks/render.py).

Several suite processes may run at once, e.g. one per core (`OMP_NUM_THREADS=1`): each run,
teacher and speed measurement is claimed by a lock under benchmarks/work/claims/, so a
process skips what another is doing and never repeats it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lib import measure
from lib.jsonstore import claim, read_rows, update_rows
from lib.paired import refresh_paired
from lib.paths import REPO
from lib.recorded import keep_predictions, predictions_home, settings_digest
from lib.stages import (
    DEPTHS,
    FULL_BUDGET,
    PRECISION,
    STAGES,
    TASKS,
    TEACHER_EPOCHS,
    TEACHER_SEED,
    Planned,
    curve_configs,
    plan_stage,
    run_rows,
)
from report import render

from layergraft.assets import mpnet_path
from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.models import resolve_model
from layergraft.objectives.runs import RESULTS_NAME
from layergraft.objectives.strategies import UNTRAINED
from layergraft.pipeline.bench import safetensors_size
from layergraft.pipeline.compare import RunKey, record_rows
from layergraft.pipeline.compress import compress
from layergraft.pipeline.finetune import RESULTS_NAME as TEACHER_RESULTS
from layergraft.pipeline.finetune import finetune
from layergraft.training.budget import Budget
from layergraft.training.heal import HealConfig
from layergraft.training.train import TrainConfig, student_training
from suites import embeddings

ROOT = REPO
# Rough minutes per run on 2 busy cores, for --dry-run before any run has been timed.
ASSUMED_MINUTES = {"train": {3: 11.0, 2: 8.0, 1: 6.0}, "none": 1.5, "teacher": 30.0}


@dataclass(frozen=True)
class Suite:
    """Where the suite works and writes, and the settings every run shares."""

    work: Path = ROOT / "benchmarks" / "work"
    results: Path = ROOT / "benchmarks" / "results" / "offline.json"
    markdown: Path = ROOT / "BENCHMARKS.md"
    precision: str = PRECISION
    model: str = "minilm"  # the built-in model every teacher is fine-tuned from
    group_by_length: bool = False  # students and teachers on length-grouped batches
    full_budget: str = FULL_BUDGET
    # What a run measures beyond dev and test. The defaults measure everything everywhere; a
    # costly suite can leave out-of-domain sets to trained runs and time only some methods
    # (every run of a method at one depth has the same shape, hence the same speed).
    ood_after_surgery: bool = True
    timed_methods: tuple[str, ...] | None = None  # trained runs of these; None: every run

    def measures(self, key: RunKey) -> dict[str, bool]:
        """compress's `speed` and `ood` flags for one run."""
        trained = key.strategy != "none"
        timed = self.timed_methods is None or (trained and key.method in self.timed_methods)
        return {"speed": timed, "ood": trained or self.ood_after_surgery}

    def teacher(self, task: str) -> Path:
        return self.work / "teachers" / task

    def run_dir(self, task: str, key: RunKey) -> Path:
        return self.work / "runs" / task / key.name

    def kept_predictions(self, task: str, key: RunKey) -> Path:
        """Committed beside the results: paired tests outlive the work folder."""
        return self.results.parent / "predictions" / self.results.stem / task / key.name

    def predictions_dir(self, task: str, key: RunKey) -> Path:
        return predictions_home(self.run_dir(task, key), self.kept_predictions(task, key))

    def teacher_recipe(self, task: str) -> dict:
        """What makes the task's teacher (`make_teacher`), standing for its bytes in the
        settings digest of every run row (benchmarks/lib/recorded.py)."""
        return {"model": self.model, "task": task, "epochs": TEACHER_EPOCHS,
                "seed": TEACHER_SEED, "precision": self.precision,
                "group_by_length": self.group_by_length}

    def claim_file(self, task: str, item: str) -> Path:
        return self.work / "claims" / task / f"{item}.lock"

    def distill_cost_file(self) -> Path:
        return self.work / "costs" / "distill_cost.json"

    def analyze_dir(self, task: str) -> Path:
        return self.work / "costs" / f"analyze-{task}"


class Store:
    """offline.json, shared by suite processes running at once (one per core): reads see
    the file as it is now, and every change replaces rows by identity."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def rows(self) -> list[dict]:
        return read_rows(self.path)

    def put(self, new: Sequence[dict], same: Callable[[Mapping], bool]) -> None:
        update_rows(self.path, lambda rows: [r for r in rows if not same(r)] + list(new))


def of_kind(kind: str, **fields) -> Callable[[Mapping], bool]:
    return lambda r: r.get("kind", "run") == kind and all(r.get(k) == v for k, v in fields.items())


def suite_rows(record: Mapping, planned: Planned, run_dir: Path, digest: str) -> list[dict]:
    """compare's long rows for one run plus what the suite's report needs beyond them;
    `digest` is the run's settings digest (benchmarks/lib/recorded.py)."""
    stages = record["train"]["stages"]
    extra = {"kind": "run", "stage": planned.stage, "run": planned.key.name,
             "steps": record["train"]["budget_steps"],
             "trained_steps": sum(s.get("global_step", s["steps"]) for s in stages),
             "teacher_layers": record["teacher"]["layers"],
             "size_bytes": safetensors_size(run_dir), "run_seconds": record.get("seconds"),
             "peak_rss_bytes": record["train"].get("peak_rss_bytes"),
             "settings_digest": digest}
    return [{**row, **extra} for row in record_rows(record, planned.key.budget)]


def make_teacher(suite: Suite, task: str) -> Path:
    """The task's teacher, fine-tuned if missing (resumes from its checkpoints)."""
    folder = suite.teacher(task)
    with claim(suite.claim_file(task, "teacher"), wait=True):  # another process may train it
        if not (folder / TEACHER_RESULTS).is_file():
            config = TrainConfig(output_dir="", epochs=TEACHER_EPOCHS, seed=TEACHER_SEED,
                                 precision=suite.precision, early_stopping_patience=2,
                                 group_by_length=suite.group_by_length)
            finetune(resolve_model(suite.model), load_task(task), str(folder), config)
    return folder


def ensure_teacher(suite: Suite, task: str, store: Store) -> str:
    """Fine-tune the task's teacher if missing (resumes from its checkpoints) and record it."""
    folder = make_teacher(suite, task)
    record = json.loads((folder / TEACHER_RESULTS).read_text())
    rows = [{"kind": "teacher", "task": task, "split": split, "metric": metric, "value": value,
             "train_seconds": record["train_seconds"], "global_step": record["global_step"],
             "epochs": record["config"]["epochs"], "seed": record["config"]["seed"],
             "size_bytes": safetensors_size(folder)}
            for split in ("dev", "test") for metric, value in record.get(split, {}).items()]
    store.put(rows, of_kind("teacher", task=task))
    return str(folder)


def run_stage(suite: Suite, stage: str, store: Store, remeasure: bool = False) -> None:
    """Every ready run of the stage; a run that fails is recorded and the stage goes on
    (a rerun retries it), so one bad cell cannot stall a night of runs. `remeasure` times
    the cost and speed stages again even where they were measured."""
    if stage == "cost":
        measure_costs(suite, store, remeasure)
        return
    if stage == "speed":
        for task in TASKS:
            time_students(suite, task, store, remeasure)
        return
    if stage == "embeddings":  # its own rows file: benchmarks/results/embeddings.json
        embeddings.run_stage("minilm")
        try:  # the 12-layer model is fetched on request only (`layergraft assets mpnet`)
            mpnet_path()
        except LayergraftError as missing:
            print(f"embeddings: the mpnet part is skipped: {missing}")
        else:
            embeddings.run_stage("mpnet")
        return
    tried: set[tuple[str, str]] = set()
    while True:  # again once a pass is done: some runs (H's seeds) wait on the stage's own rows
        ready = [p for p in plan_stage(stage, store.rows)
                 if not p.pending and (p.task, p.key.name) not in tried]
        if not ready:
            return
        tried |= {(p.task, p.key.name) for p in ready}
        run_planned(suite, ready, store)


def run_planned(suite: Suite, planned_runs: Sequence[Planned], store: Store) -> None:
    """Every planned run that is not waiting, each claimed so that processes share them (a
    run another process finished since `committed` was read returns its finished results)."""
    committed = store.rows
    for planned in planned_runs:
        if planned.pending:
            continue
        if recorded(suite, planned, committed):
            continue  # finished in an earlier session: its rows are committed
        teacher = ensure_teacher(suite, planned.task, store)
        with claim(suite.claim_file(planned.task, planned.key.name)) as mine:
            if mine:  # else another suite process is running it
                run_one(suite, planned, teacher, store)


def compress_options(suite: Suite, planned: Planned) -> dict:
    """The keyword arguments of the suite's compress call for one planned run."""
    key = planned.key
    return {"layers": key.layers,
            "method": key.method, "strategy": key.strategy, "seed": key.seed,
            "budget": key.scaled(Budget.parse(suite.full_budget)),
            "out_dir": suite.run_dir(planned.task, key), "precision": suite.precision,
            "cache_dir": suite.work / "cache",
            "training": student_training(group_by_length=suite.group_by_length),
            "heal": HealConfig(steps=key.heal) if key.heal else None,
            "replace_other_runs": True, **suite.measures(key)}


def recorded(suite: Suite, planned: Planned, rows: Sequence[Mapping]) -> bool:
    """Whether the results file holds this run's rows under the settings the package would
    give it now, its work folder (and teacher) gone or not. The digest names the teacher by
    its recipe, so the suite's base model stands in for it: no teacher is fine-tuned again
    only to learn that nothing is left to run."""
    digests = {r["settings_digest"] for r in rows
               if of_kind("run", task=planned.task, run=planned.key.name)(r)
               and r.get("settings_digest")}  # rows from before digests: the run is redone
    if not digests:
        return False
    settings = compress(resolve_model(suite.model), planned.task,
                        **compress_options(suite, planned), dry_run=True)["settings"]
    return settings_digest(settings, suite.teacher_recipe(planned.task)) in digests


def run_one(suite: Suite, planned: Planned, teacher: str, store: Store) -> None:
    """One compress run and its rows (a failure is recorded instead); the predictions of a
    trained seed-0, full-budget run are kept for the paired tests."""
    task, key = planned.task, planned.key
    out = suite.run_dir(task, key)
    try:
        record = compress(teacher, task, **compress_options(suite, planned))
    except Exception as error:  # recorded in offline.json and BENCHMARKS.md
        traceback.print_exc()
        store.put([{"kind": "failure", "stage": planned.stage, "task": task, "run": key.name,
                    "error": f"{type(error).__name__}: {error}"}],
                  of_kind("failure", task=task, run=key.name))
        return
    digest = settings_digest(record["settings"], suite.teacher_recipe(task))
    if key.seed == 0 and key.budget == 1.0 and key.strategy not in UNTRAINED:
        keep_predictions(out, suite.kept_predictions(task, key))  # a pair can choose it
    store.put(suite_rows(record, planned, out, digest), of_kind("run", task=task, run=key.name))
    store.put([], of_kind("failure", task=task, run=key.name))


def measure_costs(suite: Suite, store: Store, remeasure: bool = False) -> None:
    """Distillation vs fine-tuning step time, and `analyze` on each teacher: measured once
    (kept under benchmarks/work/costs/) unless `remeasure`."""
    with claim(suite.work / "claims" / "distill_cost.lock", wait=True):
        store.put([measure.distill_cost(suite.distill_cost_file(), suite.precision,
                                        fresh=remeasure)],
                  of_kind("cost", name="distill_epoch_ratio"))
    for task in TASKS:
        teacher = ensure_teacher(suite, task, store)
        with claim(suite.claim_file(task, "analyze"), wait=True):
            store.put([measure.time_analyze(teacher, task, suite.analyze_dir(task),
                                            fresh=remeasure)],
                      of_kind("cost", name="analyze_seconds", task=task))


def time_students(suite: Suite, task: str, store: Store, remeasure: bool = False,
                  depths: Sequence[int] = DEPTHS, strategy: str = "distill") -> None:
    """One speed run per task over the finished seed-0 graft students of `strategy`, one per
    depth; measured again when the set of students changed, or on `remeasure`."""
    students, missing = speed_students(suite, task, depths, strategy)
    if missing:
        print("\n".join(missing))
    with claim(suite.claim_file(task, "speed")) as mine:
        timed = {r["model"] for r in store.rows if of_kind("speed", task=task)(r)}
        if mine and students and (remeasure or timed != {str(s) for s in students}):
            store.put(measure.speed_together(suite.teacher(task), students, task,
                                                  suite.precision),
                      of_kind("speed", task=task))


def speed_students(suite: Suite, task: str, depths: Sequence[int] = DEPTHS,
                   strategy: str = "distill") -> tuple[list[Path], list[str]]:
    """The seed-0 graft students the speed stage times, and a line to print per one not on
    this machine: rows committed from another machine count as done, but their models stay
    there, and a run folder is what the timing needs."""
    folders = [suite.run_dir(task, RunKey("graft", strategy, n, 0)) for n in depths]
    present = [f for f in folders if (f / RESULTS_NAME).is_file()]
    missing = [f"{task}: not timed here: {f} has no finished run (its rows may come from "
               f"another machine; delete that run's rows to train it here)"
               for f in folders if f not in present]
    return present, missing


def finish_stage(suite: Suite, store: Store) -> None:
    """Paired tests and the environment row from what is on disk, then BENCHMARKS.md."""
    pairs = [(task, layers, curve_configs(store.rows, task, layers))
             for task in TASKS for layers in DEPTHS]
    refresh_paired(store, pairs, suite.predictions_dir)
    store.put([measure.environment()], of_kind("environment"))
    render.write(suite.results, suite.markdown)


def dry_run(suite: Suite, stages: Sequence[str], rows: Sequence[Mapping]) -> str:
    """Every planned run with its state (done / todo / pending), counts and a time estimate."""
    lines, total = [], 0.0
    for task in TASKS:
        done = (suite.teacher(task) / TEACHER_RESULTS).is_file()
        total += 0.0 if done else ASSUMED_MINUTES["teacher"]
        state = "present" if done else "to fine-tune before the first run left"
        lines.append(f"teacher {task}: {state}")
    failed = {(r["task"], r["run"]): r["error"] for r in rows if r.get("kind") == "failure"}
    for stage in stages:
        lines.append(f"\nstage {stage}: {STAGES[stage]}")
        if stage == "cost":
            kept = [suite.distill_cost_file(),
                    *(measure.analyze_record(suite.analyze_dir(task)) for task in TASKS)]
            done = all(path.is_file() for path in kept)
            lines.append(f"  {'measured' if done else 'to measure (a few minutes)'}")
            continue
        if stage == "speed":
            lines.append("  one interleaved run per task over the finished graft students "
                         "(about 10 minutes each)")
            lines += [f"  {line}" for task in TASKS for line in speed_students(suite, task)[1]]
            continue
        if stage == "embeddings":
            lines.append("  its own plan: python benchmarks/embeddings.py --dry-run")
            continue
        planned = plan_stage(stage, rows)
        states = [run_state(suite, p, rows) for p in planned]
        todo = [p for p, s in zip(planned, states, strict=True) if s == "todo"]
        minutes = sum(_minutes(rows, p.task, p.key) for p in todo)
        total += minutes
        lines += [f"  {p.task:16} {p.key.name:48} {s}"
                  + (f" (failed last time: {failed[p.task, p.key.name]})"
                     if (p.task, p.key.name) in failed and s == "todo" else "")
                  for p, s in zip(planned, states, strict=True)]
        lines.append(f"  {len(planned)} runs: {states.count('done')} done, "
                     f"{states.count('todo')} to run, {states.count('pending')} pending; "
                     f"about {minutes / 60:.1f} h left")
        waiting = list(dict.fromkeys(p.pending for p in planned if p.pending))
        if waiting:
            lines.append("  pending until these rows exist: "
                         + ", ".join(waiting))
    lines.append(f"\nabout {total / 60:.1f} h of runs left in these stages "
                 "(timed runs where there are some, else rough 2-core guesses)")
    return "\n".join(lines)


def run_state(suite: Suite, planned: Planned, rows: Sequence[Mapping]) -> str:
    """done (its folder holds its results, or the results file its rows under today's
    settings), todo or pending."""
    if planned.pending:
        return "pending"
    done = (suite.run_dir(planned.task, planned.key) / RESULTS_NAME).is_file() or \
        recorded(suite, planned, rows)
    return "done" if done else "todo"


def _minutes(rows: Sequence[Mapping], task: str, key: RunKey) -> float:
    """Median minutes of finished runs like this one (same task, depth, trained or not: healing
    alone counts as untrained), scaled by budget; else the assumed figure."""
    trains = key.strategy not in UNTRAINED
    seen = [r["run_seconds"] / (r["budget"] if trains else 1.0) / 60 for r in run_rows(rows)
            if r["task"] == task and r["layers"] == key.layers and r.get("run_seconds")
            and (r["strategy"] not in UNTRAINED) == trains and r["split"] == "dev"
            and r["metric"] == TASKS[task]]
    if seen:
        return statistics.median(seen) * (key.budget if trains else 1.0)
    return ASSUMED_MINUTES["train"][key.layers] * key.budget if trains else \
        ASSUMED_MINUTES["none"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", action="append", choices=list(STAGES),
                        help="run only this stage (repeatable); default: all, in order")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs and what is done; train nothing, write nothing")
    parser.add_argument("--remeasure", action="store_true",
                        help="time the cost and speed stages again even where measured; run "
                        "it alone on a quiet machine: --stage cost --stage speed --remeasure")
    parser.add_argument("--work", type=Path, default=Suite.work)
    parser.add_argument("--results", type=Path, default=Suite.results)
    parser.add_argument("--markdown", type=Path, default=Suite.markdown)
    args = parser.parse_args(argv)
    suite = Suite(work=args.work, results=args.results, markdown=args.markdown)
    stages = args.stage or list(STAGES)
    store = Store(suite.results)
    if args.dry_run:
        print(dry_run(suite, stages, store.rows))
        return
    for stage in stages:
        run_stage(suite, stage, store, args.remeasure)
        finish_stage(suite, store)

