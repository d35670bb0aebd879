"""Paired tests of graft against the strongest baseline on the same examples (McNemar and a
paired bootstrap of the task's target metric), from the runs' saved per-example predictions,
as rows of kind `paired`; and their table in BENCHMARKS.md. The MiniLM suite
(benchmarks/offline.py) and the 12-layer stage (benchmarks/mpnet.py) each say which two runs
to compare at each task and depth."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from layergraft.data.tasks import Task, load_task
from layergraft.objectives.runs import PREDICTIONS_NAME
from layergraft.pipeline.compare import RunKey
from layergraft.report.stats import mcnemar, paired_bootstrap
from layergraft.report.tables import markdown_from_cells
from lib.stages import TASKS

Config = tuple[str, str]  # (method, strategy)
Pair = tuple[str, int, tuple[Config, Config] | None]  # task, layers, (graft, baseline)


def paired_rows(pairs: Iterable[Pair], run_dir: Callable[[str, RunKey], Path]) -> list[dict]:
    """Each (task, layers, (graft config, baseline config)) compared at seed 0, full budget,
    on every labelled split but dev, once both runs' predictions are on disk; `run_dir(task,
    key)` is where a run's files live. A pair whose configs are not chosen yet (None) waits."""
    out, tasks = [], {}
    for task, layers, configs in pairs:
        files = [Path(run_dir(task, RunKey(m, s, layers))) / PREDICTIONS_NAME
                 for m, s in configs or ()]
        if not files or not all(f.is_file() for f in files):
            continue
        if task not in tasks:
            tasks[task] = load_task(task)
        loaded = tasks[task]
        with np.load(files[0]) as a, np.load(files[1]) as b:
            for split in [s for s in a.files if not s.startswith("teacher_") and s != "dev"]:
                labels = _labels(loaded, split)
                if labels is not None and len(labels) == len(a[split]) and split in b.files:
                    out.append(_paired(task, layers, split, configs, a[split], b[split],
                                       labels, loaded.spec.is_regression))
    return out


def refresh_paired(store, pairs: Sequence[Pair],
                   predictions_dir: Callable[[str, RunKey], Path]) -> None:
    """Store the paired tests of `pairs` (a suite's `Store`): new ones replace those of their
    task and depth, and stored ones whose two runs are no longer the chosen ones go."""
    compared = paired_rows(pairs, predictions_dir)
    store.put([], outdated(pairs))
    store.put(compared, replaced_by(compared))


def outdated(pairs: Sequence[Pair]) -> Callable[[Mapping], bool]:
    """Stored paired rows of a task and depth in `pairs` that compare other runs than the
    ones chosen now (a choice on dev changed, or is not made yet)."""
    chosen = {(task, layers): tuple("/".join(c) for c in configs) if configs else None
              for task, layers, configs in pairs}
    return lambda r: (r.get("kind") == "paired" and (r["task"], r["layers"]) in chosen
                      and (r["a_run"], r["b_run"]) != chosen[r["task"], r["layers"]])


def replaced_by(rows: Sequence[Mapping]) -> Callable[[Mapping], bool]:
    """The stored paired rows that `rows` replace: those of the same task and depth. A pair
    whose predictions are not on this disk keeps its stored rows, since a suite's results
    outlive its work folder."""
    keys = {(r["task"], r["layers"]) for r in rows}
    return lambda r: r.get("kind") == "paired" and (r["task"], r["layers"]) in keys


def paired_table(rows: Sequence[Mapping], task: str) -> list[str]:
    """The task's paired rows as a titled table, or nothing while there are none."""
    paired = [r for r in rows if r.get("kind") == "paired" and r["task"] == task]
    if not paired:
        return []
    cells = [[f"{r['layers']}", r["split"], f"{r['a_run']} vs {r['b_run']}", f"{r['n']}",
              f"{100 * r['delta']:+.2f}", f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]",
              f"{r['bootstrap_p']:.3g}",
              "—" if r["mcnemar_p"] is None else
              f"{r['mcnemar_p']:.3g} ({r['only_a']} vs {r['only_b']})"] for r in paired]
    return ["### Paired tests on the same examples (seed 0, full budget)",
            markdown_from_cells(["layers", "split", "graft vs strongest baseline", "examples",
                                 f"Δ {TASKS[task]} (pts)", "95% CI", "bootstrap p",
                                 "McNemar p (only graft right vs only baseline right)"], cells)]


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
