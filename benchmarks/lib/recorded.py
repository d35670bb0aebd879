"""What the committed results file says was finished, for suites whose work folders do not
outlive the machine: benchmarks/work/ is git-ignored, so a new session starts without the
run folders while benchmarks/results/ still holds every row they produced.

A run row carries a digest of the run's settings (`compress`'s own, compared by
`layergraft.objectives.runs`) with the teacher named by its recipe instead of its path and
bytes: a teacher fine-tuned again on another CPU by the same recipe differs in its last bits,
and every row keeps the teacher's own score it was measured against (`teacher_value`), so
its retention stays its own. A package default changed since gives another digest, and the
run is redone. Paired tests read per-example predictions, which are kept beside the rows for
the runs they can compare (seed 0, full budget)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from layergraft.objectives.runs import PREDICTIONS_NAME

TEACHER_BYTES = ("teacher", "teacher_content")  # where the teacher lives and what it holds


def settings_digest(settings: Mapping, teacher_recipe: Mapping) -> str:
    """A run's identity across machines: its settings, the teacher by recipe."""
    portable = {k: v for k, v in settings.items() if k not in TEACHER_BYTES}
    text = json.dumps({**portable, "teacher_recipe": dict(teacher_recipe)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keep_predictions(run_dir: Path, kept: Path) -> None:
    """Copy what paired tests read of a finished run's predictions (its own outputs on every
    split but dev; not the teacher's) to where the results are committed, compressed."""
    source = run_dir / PREDICTIONS_NAME
    if not source.is_file():
        return
    with np.load(source) as arrays:
        compared = {name: arrays[name] for name in arrays.files
                    if name != "dev" and not name.startswith("teacher_")}
    kept.mkdir(parents=True, exist_ok=True)
    partial = kept / f".{PREDICTIONS_NAME}.partial"
    with open(partial, "wb") as handle:
        np.savez_compressed(handle, **compared)
    partial.replace(kept / PREDICTIONS_NAME)


def predictions_home(run_dir: Path, kept: Path) -> Path:
    """The folder that holds a run's predictions: its work folder, else the kept copy."""
    return run_dir if (run_dir / PREDICTIONS_NAME).is_file() else kept
