"""Where the benchmarks read and write, wherever the importing module sits."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"  # committed rows, predictions and figures
WORK = BENCHMARKS / "work"  # git-ignored run folders
