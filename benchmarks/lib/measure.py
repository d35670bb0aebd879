"""The suite's measurements beyond the runs themselves, each returned as an offline.json row.

- `environment`: machine, versions and commit, so BENCHMARKS.md can say what ran.
- `time_analyze`: wall time of the `layergraft analyze` command (2,000 examples) on a teacher.
- `distill_cost`: a distillation epoch vs a fine-tuning epoch of the same student, measured
  interleaved by benchmarks/distill_cost.py.
- `speed_together`: the teacher and a student of every depth timed together in one
  interleaved run with more repeats than each run's own check, for the speed target.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch

from layergraft.pipeline.bench_run import bench_models
from layergraft.runtime import cpu_capability
from layergraft.training.distill import DistillConfig
from layergraft.utils import versions, write_json_atomic
from lib.paths import BENCHMARKS

ANALYZE_SAMPLES = 2000
SPEED_REPEATS = 15
COST_STEPS = 60  # per arm, interleaved step by step (benchmarks/distill_cost.py)


def cpu_name() -> str:
    """The CPU's model name where Linux tells it, else what `platform` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def environment() -> dict:
    """What machine and code produced the rows (replaced on every suite invocation)."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"kind": "environment", "cpu": cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device,
            "platform": platform.platform(), "versions": versions(), "commit": _commit(),
            "updated": now()}


def _commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(BENCHMARKS), *args], capture_output=True,
                              text=True, check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _to_measure(kept: Path, fresh: bool) -> bool:
    """Whether a timing kept in `kept` must be taken (again): it is missing, or `fresh`."""
    if fresh:
        kept.unlink(missing_ok=True)
    return not kept.is_file()


def analyze_record(out_dir: Path) -> Path:
    """Where `time_analyze` keeps its timing: beside the analysis folder."""
    return out_dir.with_name(f"{out_dir.name}.json")


def time_analyze(teacher: str | os.PathLike, task: str, out_dir: Path,
                 fresh: bool = False) -> dict:
    """Time `layergraft analyze` as a user runs it (process start and imports included), once:
    the record is kept (`analyze_record`) and reused unless `fresh`."""
    kept = analyze_record(out_dir)
    if _to_measure(kept, fresh):
        command = [sys.executable, "-m", "layergraft.cli", "analyze", str(teacher), "--task",
                   task, "--samples", str(ANALYZE_SAMPLES), "--out", str(out_dir)]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        write_json_atomic(kept, {
            "kind": "cost", "name": "analyze_seconds", "task": task,
            "value": round(time.perf_counter() - start, 1), "unit": "s",
            "loadavg": round(load, 2), "threads": torch.get_num_threads(),
            "command": f"layergraft analyze TEACHER --task {task} --samples {ANALYZE_SAMPLES}"})
    return json.loads(kept.read_text())


def distill_cost(out_file: Path, precision: str, model: str | None = None,
                 fresh: bool = False) -> dict:
    """Run benchmarks/distill_cost.py once (its JSON is kept and reused unless `fresh`): the
    distillation epoch ratio, with the heal steps' cost next to a distillation step."""
    if _to_measure(out_file, fresh):
        out_file.parent.mkdir(parents=True, exist_ok=True)
        partial = out_file.with_name(f".{out_file.name}.partial")
        command = [sys.executable, str(BENCHMARKS / "distill_cost.py"), str(partial),
                   "--steps", str(COST_STEPS), *(["--model", model] if model else []),
                   "--precision", precision]
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        os.replace(partial, out_file)
    record = json.loads(out_file.read_text())
    # The arm that matches what compress distils with by default.
    arm = "distill_cached_hidden" if DistillConfig().uses_hidden else "distill_cached"
    return {"kind": "cost", "name": "distill_epoch_ratio",
            "value": record["ratio_to_finetune"][arm], "arm": arm,
            "ratios": record["ratio_to_finetune"],
            "step_seconds": record["step_seconds_median"], "steps": record["steps"],
            "heal_ratios": record.get("heal_ratio_to_distill"),
            "batch_size": record["batch_size"], "precision": record.get("precision"),
            "device": record.get("device")}


def speed_together(teacher: Path, students: Sequence[Path], task: str,
                   precision: str) -> list[dict]:
    """Speed-up of each student over the teacher, all timed in one interleaved run on the
    task's dev lengths. Speed depends on depth and shape alone, which every method shares,
    so one student per depth stands for all of them."""
    records = bench_models([str(teacher), *map(str, students)], task, repeats=SPEED_REPEATS,
                           precision=precision)
    reference = next(r for r in records if r["model"] == str(teacher))
    where = {"cpu": f"{cpu_name()} ({cpu_capability()})", "measured": now()}
    return [{"kind": "speed", "task": task, **where, "model": r["model"], "layers": r["layers"],
             "batch": r["batch_size"], "speed_up": r["throughput_ratio"],
             "ideal": r["ideal_ratio"], "repeats": SPEED_REPEATS, "threads": r["threads"],
             "params": r["params"], "size_bytes": r["size_bytes"],
             "teacher_params": reference["params"], "teacher_size_bytes": reference["size_bytes"]}
            for r in records if r["model"] != str(teacher)]
