"""Issue 15's deployment benchmark: the movie-sentiment MiniLM teacher and graft students timed
on nine backends in one run, each scored on the test split.

    python benchmarks/deploy.py                     # make the teacher and students, then bench
    python benchmarks/deploy.py --student PATH [--student PATH ...] [--teacher PATH]

Without --student, the teacher is the offline suite's (benchmarks/work/teachers/, made by its
recipe when missing) and the students are graft at 3 and 2 layers, seed 0, trained by the
suite's recipe: its full budget, and the strategy the suite chose for graft on dev at that
depth (benchmarks/results/offline.json; progressive where it has not chosen), each a
resumable compress run under benchmarks/work/deploy/students/.

One `layergraft bench` (torch-fp32, torch-bf16, torch-int8, onnx-fp32, onnx-int8 and
onnx-int8-static, and the fused onnx-opt-* graphs of the same three; batch 32
and 1 on the test split's real lengths; the teacher in torch-fp32 is the reference) writes
benchmarks/results/deploy-<cpu>.json (records + machine) and figures/deploy_pareto-<cpu>.png,
one pair per CPU capability (int8 speed depends on it: AVX2 has no VNNI), then prints the
issue's targets, each MET or MISSED. report/deploy_section.py names those files, judges the
targets and renders the BENCHMARKS.md section, one part per CPU, from those files alone.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from collections.abc import Sequence
from pathlib import Path

from lib.jsonstore import read_rows
from lib.paths import REPO, WORK
from lib.stages import best_strategy
from report.deploy_section import SPEED_TARGETS, TASK, figure_path, results_path, targets

from layergraft.deploy.backends import BACKENDS  # every one bench has: fused and static int8 too
from layergraft.pipeline.compress import compress
from layergraft.training.budget import Budget
from layergraft.training.train import student_training
from suites.offline import Suite, make_teacher

ROOT = REPO
TEACHER = WORK / "teachers" / TASK
DEPLOY_WORK = WORK / "deploy"
REPEATS = 15


def run(teacher: str, students: Sequence[str], repeats: int = REPEATS) -> dict:
    """Bench every model on every backend, save this CPU's results and figure; the record."""
    import torch

    import layergraft
    from layergraft.report.bench_report import pareto_png
    from layergraft.runtime import cpu_capability
    from layergraft.utils import versions, write_bytes_atomic, write_json_atomic

    rows = layergraft.bench([teacher, *students], TASK, split="test", backends=BACKENDS,
                            score_split="test", out=DEPLOY_WORK, repeats=repeats, device="cpu",
                            precision="fp32")
    import onnxruntime

    rows = [{**r, "model": _in_repo(r["model"])} for r in rows]
    machine = {"cpu": cpu_capability(), "platform": platform.platform(),
               "torch_threads": torch.get_num_threads(),
               "versions": {**versions(), "onnxruntime": onnxruntime.__version__},
               "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    record = {"teacher": _in_repo(teacher), "students": [_in_repo(s) for s in students],
              "repeats": repeats,
              "machine": machine, "records": rows}
    write_json_atomic(results_path(machine["cpu"]), record)
    write_bytes_atomic(figure_path(machine["cpu"]), pareto_png(rows))
    return record


def _in_repo(path: str) -> str:
    """A model path as the report shows it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def make_students(depths: Sequence[int] = tuple(SPEED_TARGETS)) -> tuple[str, list[str]]:
    """The suite's teacher and graft students (see the module docstring); resumable."""
    suite = Suite()
    teacher = make_teacher(suite, TASK)
    rows, students = read_rows(suite.results), []
    for depth in sorted(depths, reverse=True):
        strategy = (best_strategy(rows, TASK, depth, "graft") or ("progressive",))[0]
        out = DEPLOY_WORK / "students" / f"L{depth}-graft-{strategy}-s0"
        compress(str(teacher), TASK, layers=depth, method="graft", strategy=strategy, seed=0,
                 budget=Budget.parse(suite.full_budget), out_dir=out,
                 precision=suite.precision, cache_dir=suite.work / "cache",
                 training=student_training(group_by_length=suite.group_by_length))
        students.append(str(out))
    return str(teacher), students


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=TEACHER)
    parser.add_argument("--student", type=Path, action="append",
                        help="A graft student folder (repeatable: the 3- and 2-layer ones); "
                        "default: the suite recipe's, made when missing.")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    teacher, students = ((str(args.teacher), [str(s) for s in args.student]) if args.student
                         else make_students())
    record = run(teacher, students, args.repeats)
    for target, needed, measured, status in targets(record):
        print(f"{status:6} {target}: needed {needed}; measured {measured}")
    cpu = record["machine"]["cpu"]
    print(f"wrote {results_path(cpu)} and {figure_path(cpu)}")

