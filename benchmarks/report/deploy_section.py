"""BENCHMARKS.md's deployment section (issue 15), from benchmarks/results/deploy-<cpu>.json
alone, one part per CPU: each record's table, the issue's targets (each MET or MISSED), the best
backend per model and the figure. suites/deploy.py (`python benchmarks/deploy.py`) writes
those files under the names given here and prints the targets as judged here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib.paths import RESULTS

from layergraft.deploy.backends import ONNX_GRAPHS
from layergraft.report.bench_report import best_lines
from layergraft.report.tables import markdown_from_cells

TASK = "movie-sentiment"
RESULTS_DIR = RESULTS
# student depth -> (its fastest accurate ONNX backend's throughput vs the teacher's torch-fp32
# at batch 32, test retention)
SPEED_TARGETS = {2: (10.0, 0.97), 3: (6.0, 0.98)}
INT8_MAX_DROP = 0.01  # int8 may cost at most 1 point of test accuracy against fp32
ONNX_BACKENDS = tuple(ONNX_GRAPHS)
INT8_BACKENDS = (*(b for b in ONNX_BACKENDS if "int8" in b), "torch-int8")


def cpu_slug(capability: str) -> str:
    """'AVX512 AVX512-BF16' -> 'avx512-avx512-bf16': the file-name part of one CPU's results."""
    return "-".join(capability.lower().split())


def results_path(capability: str, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / f"deploy-{cpu_slug(capability)}.json"


def figure_path(capability: str, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / "figures" / f"deploy_pareto-{cpu_slug(capability)}.png"


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
            onnx = fastest_onnx(rows, student, fp32)
            backend = onnx["backend"] if onnx else "onnx-int8"
            measured = ("not run" if onnx is None else
                        f"{onnx['throughput_ratio']:.2f}x, {100 * onnx['retention']:.2f}%")
            met = (onnx is not None and onnx["throughput_ratio"] >= speed
                   and onnx["retention"] >= retention)
            checks.append([f"{name} ({depth} layers) {backend} vs teacher torch-fp32",
                           f">= {speed:g}x at batch 32, >= {100 * retention:g}% test retention",
                           measured, "MET" if met else "MISSED"])
        for backend in [b for b in INT8_BACKENDS  # the two of issue 15, and any other run
                        if b in ("onnx-int8", "torch-int8") or _pick(rows, student, b)]:
            int8 = _pick(rows, student, backend)
            drop = None if int8 is None else fp32["value"] - int8["value"]
            checks.append([f"{name} ({depth} layers) {backend} vs its torch-fp32",
                           f"<= {100 * INT8_MAX_DROP:g} point of test accuracy lost",
                           "not run" if drop is None else f"{100 * drop:+.2f} points lost",
                           "MET" if drop is not None and drop <= INT8_MAX_DROP + 1e-12
                           else "MISSED"])
    return checks


def fastest_onnx(rows: Sequence[Mapping], student: str, fp32: Mapping) -> Mapping | None:
    """The student's fastest ONNX backend at batch 32 that keeps its accuracy (at most
    INT8_MAX_DROP below its own torch-fp32): what a user deploys (issue 35: fused graphs and
    static int8 beside dynamic int8, whichever is faster on this CPU)."""
    kept = [r for backend in ONNX_BACKENDS if (r := _pick(rows, student, backend))
            and fp32["value"] - r["value"] <= INT8_MAX_DROP + 1e-12]
    return max(kept, key=lambda r: r["throughput_ratio"], default=None)


def section(results_dir: Path = RESULTS_DIR, link: str = "benchmarks/results/figures") -> str:
    """The BENCHMARKS.md section, one part per CPU's deploy-<cpu>.json ("not run yet" without)."""
    title = "## Deployment: backends (issues 15 and 35, `benchmarks/deploy.py`)"
    records = [json.loads(path.read_text())
               for path in sorted(results_dir.glob("deploy-*.json"))]
    if not records:
        return f"{title}\n\nNot run yet."
    return "\n\n".join([title, *(_cpu_part(record, results_dir, link) for record in records)])


def _cpu_part(record: Mapping, results_dir: Path, link: str) -> str:
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
