"""A compress run's folder: its files, and whether a call returns, resumes or starts afresh.

A run is identified by its settings (written to `compress_settings.json` before any work):
a finished `results.json` with the same settings is returned as is (`run_status` says
"done"; of other settings, "stale"), an unfinished run with the same settings resumes from
its checkpoints, and only files a compress run wrote are ever replaced without --overwrite
(a suite may also replace its own run of other settings with `replace_other_runs`, but
still no other model).
"""

from __future__ import annotations

import json
import shutil

from layergraft.errors import LayergraftError
from layergraft.models import holds_model
from layergraft.utils import write_json_atomic

FORMAT = "layergraft-compress/1"
RESULTS_NAME = "results.json"
SETTINGS_NAME = "compress_settings.json"
PREDICTIONS_NAME = "predictions.npz"
# Work folders, removed once the student is saved.
CHECKPOINTS = "checkpoints"
PROGRESSIVE = "progressive"
HEALED = "healed"
WORK_FOLDERS = (CHECKPOINTS, PROGRESSIVE, HEALED)
# What a call would do with a run's folder (`run_status`).
DONE, STALE, TO_DO = "done", "stale", "to do"


def run_status(run) -> str:
    """What a call does with the run's folder: DONE (a results.json with these very
    settings: returned as is), STALE (a results.json of other settings) or TO_DO."""
    path = run.out / RESULTS_NAME
    if not path.is_file():
        return TO_DO
    return DONE if json.loads(path.read_text()).get("settings") == run.settings() else STALE


def finished_results(run, overwrite: bool) -> dict | None:
    """The record of a finished run with these very settings, else None."""
    if overwrite or run_status(run) != DONE:
        return None
    return json.loads((run.out / RESULTS_NAME).read_text())


def start_fresh_or_resume(run, overwrite: bool, replace_other_runs: bool) -> None:
    """Resume our own unfinished run with the same settings; otherwise start clean, but
    never replace another run or a model without --overwrite."""
    settings_path = run.out / SETTINGS_NAME
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if previous == run.settings() and not overwrite:
        return
    replaceable = overwrite or (replace_other_runs and previous is not None)
    if not replaceable and (previous is not None or holds_model(run.out)
                            or (run.out / RESULTS_NAME).exists()):
        raise LayergraftError(f"'{run.out}' holds another run or model: choose another --out "
                              "or pass --overwrite")
    for work in WORK_FOLDERS:
        shutil.rmtree(run.out / work, ignore_errors=True)
    for name in (RESULTS_NAME, PREDICTIONS_NAME):
        (run.out / name).unlink(missing_ok=True)
    write_json_atomic(settings_path, run.settings())
