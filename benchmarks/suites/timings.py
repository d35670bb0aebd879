"""Issue 12's wall-clock targets: `./run test` and `./run demo` with the venv present, timed
with the CPU they ran on (bf16 is native on some of this project's machines and emulated on
others, so a timing without its CPU means nothing).

    python benchmarks/timings.py [--what test --what demo] [--demo-out runs/timed-demo]

Each command runs in a subprocess from the repository root; its seconds, exit status, the
CPU's capability (torch's vector unit and its native bf16 units), the precision `auto` picks,
the torch thread setting and the load average at the start are appended to
benchmarks/results/timings.json. The demo is timed from an empty output folder, so its
teacher is fine-tuned too. Run it on a quiet machine for figures to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime

import torch
from lib import paths

from layergraft.runtime import Runtime, cpu_capability
from layergraft.utils import versions, write_json_atomic

ROOT = paths.REPO
RESULTS = paths.RESULTS / "timings.json"


def timed(command: list[str]) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return {"command": " ".join(command), "seconds": round(seconds, 1),
            "returncode": done.returncode, "loadavg_at_start": round(load, 2),
            "tail": done.stdout.strip().splitlines()[-6:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", action="append", choices=("test", "demo"))
    parser.add_argument("--demo-out", default="runs/timed-demo")
    args = parser.parse_args()
    machine = {"cpu_capability": cpu_capability(), "auto_precision": Runtime.resolve().precision,
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "versions": versions(),
               "when": datetime.now(UTC).isoformat(timespec="seconds")}
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    for what in args.what or ["test", "demo"]:
        if what == "demo":
            shutil.rmtree(ROOT / args.demo_out, ignore_errors=True)
            command = ["./run", "demo", "--out", args.demo_out]
        else:
            command = ["./run", "test"]
        row = {"what": what, **machine, **timed(command)}
        print(json.dumps(row, indent=1))
        rows.append(row)
        write_json_atomic(RESULTS, rows)

