"""Issue 15's deployment benchmark: the movie-sentiment MiniLM teacher and graft students timed
on five backends in one run, each scored on the test split.

    python benchmarks/deploy.py                     # make the teacher and students, then bench
    python benchmarks/deploy.py --student PATH [--student PATH ...] [--teacher PATH]

Without --student, the teacher is the offline suite's (benchmarks/work/teachers/, made by its
recipe when missing) and the students are graft at 3 and 2 layers, seed 0, trained by the
suite's recipe: its full budget, and the strategy the suite chose for graft on dev at that
depth (benchmarks/results/offline.json; progressive where it has not chosen), each a
resumable compress run under benchmarks/work/deploy/students/.

One `layergraft bench` (torch-fp32, torch-bf16, torch-int8, onnx-fp32, onnx-int8; batch 32
and 1 on the test split's real lengths; the teacher in torch-fp32 is the reference) writes
benchmarks/results/deploy-<cpu>.json (records + machine) and figures/deploy_pareto-<cpu>.png,
one pair per CPU capability (int8 speed depends on it: AVX2 has no VNNI), then prints the
issue's targets, each MET or MISSED. `section()` renders the BENCHMARKS.md section, one part
per CPU, from those files alone (benchmarks/render.py includes it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = "movie-sentiment"
TEACHER = ROOT / "benchmarks" / "work" / "teachers" / TASK
RESULTS_DIR = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work" / "deploy"
BACKENDS = ("torch-fp32", "torch-bf16", "torch-int8", "onnx-fp32", "onnx-int8")
REPEATS = 15
# student depth -> (onnx-int8 throughput vs the teacher's torch-fp32 at batch 32, test retention)
SPEED_TARGETS = {2: (10.0, 0.97), 3: (6.0, 0.98)}
INT8_MAX_DROP = 0.01  # int8 may cost at most 1 point of test accuracy against fp32


def cpu_slug(capability: str) -> str:
    """'AVX512 AVX512-BF16' -> 'avx512-avx512-bf16': the file-name part of one CPU's results."""
    return "-".join(capability.lower().split())


def results_path(capability: str, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / f"deploy-{cpu_slug(capability)}.json"


def figure_path(capability: str, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / "figures" / f"deploy_pareto-{cpu_slug(capability)}.png"


def run(teacher: str, students: Sequence[str], repeats: int = REPEATS) -> dict:
    """Bench every model on every backend, save this CPU's results and figure; the record."""
    import torch

    import layergraft
    from layergraft.report.bench_report import pareto_png
    from layergraft.runtime import cpu_capability
    from layergraft.utils import versions, write_bytes_atomic, write_json_atomic

    rows = layergraft.bench([teacher, *students], TASK, split="test", backends=BACKENDS,
                            score_split="test", out=WORK, repeats=repeats, device="cpu",
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
    from jsonstore import read_rows
    from offline import Suite, make_teacher
    from stages import best_strategy

    from layergraft.pipeline.compress import compress
    from layergraft.training.budget import Budget
    from layergraft.training.train import student_training

    suite = Suite()
    teacher = make_teacher(suite, TASK)
    rows, students = read_rows(suite.results), []
    for depth in sorted(depths, reverse=True):
        strategy = (best_strategy(rows, TASK, depth, "graft") or ("progressive",))[0]
        out = WORK / "students" / f"L{depth}-graft-{strategy}-s0"
        compress(str(teacher), TASK, layers=depth, method="graft", strategy=strategy, seed=0,
                 budget=Budget.parse(suite.full_budget), out_dir=out,
                 precision=suite.precision, cache_dir=suite.work / "cache",
                 training=student_training(group_by_length=suite.group_by_length))
        students.append(str(out))
    return str(teacher), students


def _pick(rows: Sequence[Mapping], model: str, backend: str) -> Mapping | None:
    return next((r for r in rows if r["model"] == model and r.get("backend") == backend
                 and r["batch_size"] == 32 and r.get("lengths", "real") == "real"
                 and "skipped" not in r), None)


def targets(record: Mapping) -> list[list[str]]:
    """[target, needed, measured, MET / MISSED] for every student the record holds."""
    rows, checks = record["records"], []
    for student in record["students"]:
        fp32 = _pick(rows, student, "torch-fp32")
        if fp32 is None:
            continue
        depth, name = fp32["layers"], Path(student).name
        if depth in SPEED_TARGETS:
            speed, retention = SPEED_TARGETS[depth]
            int8 = _pick(rows, student, "onnx-int8")
            measured = ("not run" if int8 is None else
                        f"{int8['throughput_ratio']:.2f}x, {100 * int8['retention']:.2f}%")
            met = (int8 is not None and int8["throughput_ratio"] >= speed
                   and int8["retention"] >= retention)
            checks.append([f"{name} ({depth} layers) onnx-int8 vs teacher torch-fp32",
                           f">= {speed:g}x at batch 32, >= {100 * retention:g}% test retention",
                           measured, "MET" if met else "MISSED"])
        for backend in ("onnx-int8", "torch-int8"):
            int8 = _pick(rows, student, backend)
            drop = None if int8 is None else fp32["value"] - int8["value"]
            checks.append([f"{name} ({depth} layers) {backend} vs its torch-fp32",
                           f"<= {100 * INT8_MAX_DROP:g} point of test accuracy lost",
                           "not run" if drop is None else f"{100 * drop:+.2f} points lost",
                           "MET" if drop is not None and drop <= INT8_MAX_DROP + 1e-12
                           else "MISSED"])
    return checks


def section(results_dir: Path = RESULTS_DIR, link: str = "benchmarks/results/figures") -> str:
    """The BENCHMARKS.md section, one part per CPU's deploy-<cpu>.json ("not run yet" without)."""
    title = "## Deployment: backends (issue 15, `benchmarks/deploy.py`)"
    records = [json.loads(path.read_text())
               for path in sorted(results_dir.glob("deploy-*.json"))]
    if not records:
        return f"{title}\n\nNot run yet."
    return "\n\n".join([title, *(_cpu_part(record, results_dir, link) for record in records)])


def _cpu_part(record: Mapping, results_dir: Path, link: str) -> str:
    from layergraft.report.bench_report import best_lines
    from layergraft.report.tables import markdown_from_cells

    rows, machine = record["records"], record["machine"]
    cells = [[Path(r["model"]).name, r["backend"], str(r["batch_size"]), r["skipped"]]
             + [""] * 4 if "skipped" in r else
             [Path(r["model"]).name, r["backend"], str(r["batch_size"]),
              f"{r['throughput']:.1f}", f"{r['throughput_ratio']:.2f}x",
              f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "—",
              f"{100 * r['value']:.2f}" if r.get("value") is not None else "—",
              f"{100 * r['retention']:.1f}" if r.get("retention") is not None else "—"]
             for r in rows if r.get("lengths", "real") == "real"]
    table = markdown_from_cells(["model", "backend", "batch", "examples/s", "vs teacher fp32",
                                 "on disk (MB)", "test accuracy", "retention %"], cells)
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    figure = figure_path(machine["cpu"], results_dir).name
    return "\n\n".join([
        f"### CPU {machine['cpu']}",
        f"Machine: {machine['cpu']}, {machine['torch_threads']} threads (torch and "
        f"ONNX Runtime alike), {machine['platform']}; {versions}; run {machine['date']}, "
        f"{record['repeats']} interleaved repeats, the {TASK} test split's real lengths.",
        table, markdown_from_cells(["target", "needed", "measured", "status"],
                                   targets(record)),
        "Best backend per model (the fastest at batch 32 within 1 point of its own "
        "torch-fp32 accuracy):\n\n" + "\n".join(best_lines(rows)),
        f"![speed vs retention per model and backend, {machine['cpu']}]({link}/{figure})"])


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


if __name__ == "__main__":
    main()
