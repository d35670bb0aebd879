"""The suite's measurements beyond the runs themselves, each returned as an offline.json row.

- `environment`: machine, versions and commit, so BENCHMARKS.md can say what ran.
- `time_analyze`: wall time of the `layergraft analyze` command (2,000 examples) on a teacher.
- `distill_cost`: a distillation epoch vs a fine-tuning epoch of the same student, measured
  interleaved by benchmarks/distill_cost.py.
- `speed_together`: the teacher and a student of every depth timed together in one
  interleaved run with more repeats than each run's own check, for the speed target.
- `paired_rows`: graft vs the strongest baseline on the same examples (McNemar and a paired
  bootstrap of the target metric) from the runs' saved per-example predictions.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from stages import DEPTHS, TASKS, curve_configs

from layergraft.data.tasks import Task, load_task
from layergraft.pipeline.bench_run import bench_models
from layergraft.pipeline.compare import RunKey
from layergraft.pipeline.runs import PREDICTIONS_NAME
from layergraft.report.stats import mcnemar, paired_bootstrap
from layergraft.training.distill import DistillConfig
from layergraft.utils import versions, write_json_atomic

BENCHMARKS = Path(__file__).resolve().parent
ANALYZE_SAMPLES = 2000
SPEED_REPEATS = 15
COST_STEPS = 60  # per arm, interleaved step by step (benchmarks/distill_cost.py)


def environment() -> dict:
    """What machine and code produced the rows (replaced on every suite invocation)."""
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"kind": "environment", "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device,
            "platform": platform.platform(), "versions": versions(), "commit": _commit(),
            "updated": datetime.now(UTC).isoformat(timespec="seconds")}


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
    return [{"kind": "speed", "task": task, "model": r["model"], "layers": r["layers"],
             "batch": r["batch_size"], "speed_up": r["throughput_ratio"],
             "ideal": r["ideal_ratio"], "repeats": SPEED_REPEATS, "threads": r["threads"]}
            for r in records if r["model"] != str(teacher)]


def paired_rows(rows: Sequence[Mapping], run_dir) -> list[dict]:
    """Graft (best strategy) vs the strongest baseline, seed 0, full budget, on every
    labelled split but dev; `run_dir(task, key)` is where a run's predictions live."""
    out = []
    for task in TASKS:
        loaded: Task | None = None
        for layers in DEPTHS:
            configs = curve_configs(rows, task, layers)
            files = [Path(run_dir(task, RunKey(m, s, layers))) / PREDICTIONS_NAME
                     for m, s in configs or ()]
            if not files or not all(f.is_file() for f in files):
                continue
            loaded = loaded or load_task(task)
            with np.load(files[0]) as a, np.load(files[1]) as b:
                for split in [s for s in a.files if not s.startswith("teacher_") and s != "dev"]:
                    labels = _labels(loaded, split)
                    if labels is not None and len(labels) == len(a[split]) and split in b.files:
                        out.append(_paired(task, layers, split, configs, a[split], b[split],
                                           labels, loaded.spec.is_regression))
    return out


def _labels(task: Task, split: str) -> np.ndarray | None:
    """Labels of an evaluation split: the task's own, or its out-of-domain set's test split."""
    if task.labeled(split):
        return np.asarray(task.splits[split]["label"])
    if split in task.spec.ood:
        return np.asarray(load_task(split).splits["test"]["label"])
    return None


def _paired(task, layers, split, configs, a, b, labels, regression) -> dict:
    metric = TASKS[task]
    if regression:
        a, b, counts = a.reshape(-1), b.reshape(-1), {}
    else:
        a, b = a.argmax(-1), b.argmax(-1)
        counts = mcnemar(a, b, labels)
    boot = paired_bootstrap(a, b, labels, metric)
    return {"kind": "paired", "task": task, "layers": layers, "split": split, "metric": metric,
            "seed": 0, "budget": 1.0, "a_run": "/".join(configs[0]),
            "b_run": "/".join(configs[1]), "n": boot["n"], "a_value": boot["a"],
            "b_value": boot["b"], "delta": boot["delta"], "ci_low": boot["ci_low"],
            "ci_high": boot["ci_high"], "bootstrap_p": boot["p_value"],
            "mcnemar_p": counts.get("p_value"), "only_a": counts.get("only_a"),
            "only_b": counts.get("only_b")}
