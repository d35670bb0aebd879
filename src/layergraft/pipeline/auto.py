"""`--lr auto` and `--plan auto`: the learning rate and the plan chosen for the model, on dev.

A rate that suits a narrow, already distilled 6-layer encoder (4e-4) wrecks a 768-wide
12-layer one, and which layers to merge depends on the model too (DESIGN section 12). Both are
chosen per teacher, method, strategy and depth by short probes: each candidate is a
`compress` run at a small share of the run's budget (seed 0, dev and test scored, no
out-of-domain sets, no timing), and the best dev retention of the task's primary metric wins
(ties: the earlier candidate). Minitron (2024): rank after a short training run, never by the
surgery-only score, which misranks candidates. Probes live under the cache folder
(`probes/`), keyed by what they depend on, so every seed and every later run of the same
teacher, method and depth reuses them; their cost is recorded beside the run's.
The learning rate is chosen first (on the method's own plan), then the plan at that rate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from layergraft.data.tasks import TaskSource, as_source
from layergraft.errors import LayergraftError
from layergraft.objectives.base import get_objective
from layergraft.objectives.runs import RESULTS_NAME
from layergraft.pipeline.compress import compress
from layergraft.surgery.plan import plan_spans
from layergraft.training.budget import Budget
from layergraft.training.train import TrainConfig, student_training
from layergraft.utils import cache_root, content_fingerprint, short_hash, write_json_atomic

LR_GRID = (2e-5, 5e-5, 1e-4, 2e-4, 4e-4)
PROBE_SHARE = 0.125  # of the run's budget, per candidate


def intact_candidates(target_layers: int) -> list[int]:
    """How many bottom layers a probed plan keeps intact: about a third, a half and two
    thirds of the student's depth (distinct, at least one, below the depth)."""
    counts = {max(1, round(target_layers * f)) for f in (1 / 3, 1 / 2, 2 / 3)}
    return sorted(c for c in counts if c < target_layers)


def compress_auto(teacher_path: str, task: str | TaskSource | None, *, layers: int,
                  out_dir: str | os.PathLike, learning_rate: float | str | None = None,
                  plan: str | None = None, budget: Budget | str | None = None,
                  training: TrainConfig | None = None, probe_share: float = PROBE_SHARE,
                  objective: str = "task", **options) -> dict:
    """`compress`, with `learning_rate="auto"` and/or `plan="auto"` chosen by probes first
    (any other plan: `uniform`, `intact:K` or explicit spans); the choices and their cost
    are added to the results as `choices`. `options` go to every `compress` call (`budget`:
    the objective's default unless given). A probe
    is ranked by its objective's `probe_score` (a classifier: dev retention of the primary
    metric; a sentence encoder: held-out mean cosine to the teacher)."""
    pairs = options.pop("pairs", None)
    if plan is not None and pairs:
        raise LayergraftError("--plan and --pairs both give the plan: pass one")
    plan = plan or pairs
    if str(options.get("method", "graft")).startswith("drop-") and plan in ("auto", "uniform"):
        plan = None  # a drop method keeps layers by its own rule: there is no plan to choose
    if options.get("dry_run") and "auto" in (learning_rate, plan):
        return {"status": "to do", "out": str(out_dir), "settings": None,
                "note": "--lr auto and --plan auto are chosen by probes when the run starts"}
    plug = get_objective(objective)
    budget = plug.default_budget if budget is None else budget
    source = as_source(task) if task is not None else None
    options["objective"] = objective
    if learning_rate is not None:
        training = training or student_training()
    if learning_rate not in (None, "auto"):
        training = replace(training, learning_rate=float(learning_rate))
    depth = plug.depth(teacher_path) if plan or learning_rate == "auto" else 0
    choices: dict = {}
    probe = Prober(teacher_path, source, layers, budget, probe_share, options)
    if learning_rate == "auto":
        spans = None if plan == "auto" else plan_spans(plan, depth, layers)
        choices["learning_rate"] = probe.choose(
            {f"lr {rate:g}": {"training": replace(training, learning_rate=rate),
                              "pairs": spans} for rate in LR_GRID})
        training = replace(training, learning_rate=LR_GRID[choices["learning_rate"]["index"]])
    if plan == "auto":
        names = ["uniform", *(f"intact:{k}" for k in intact_candidates(layers))]
        choices["plan"] = probe.choose(
            {name: {"training": training, "pairs": plan_spans(name, depth, layers)}
             for name in names})
        plan = names[choices["plan"]["index"]]
    record = compress(teacher_path, source, layers=layers, out_dir=out_dir, budget=budget,
                      training=training, pairs=plan_spans(plan, depth, layers) if plan else None,
                      **options)
    if choices and not options.get("dry_run"):
        record["choices"] = choices
        write_json_atomic(Path(out_dir) / RESULTS_NAME, record)
    return record


class Prober:
    """Short runs of one teacher, task, method, strategy and depth, cached by what they
    depend on; `choose` runs (or reuses) one per candidate and names the best on dev."""

    def __init__(self, teacher_path: str, source: TaskSource, layers: int,
                 budget: Budget | str, share: float, options: Mapping) -> None:
        self.teacher_path, self.source, self.layers = teacher_path, source, layers
        self.budget = Budget.parse(budget).share(share)
        self.options = {k: v for k, v in options.items()
                        if k not in ("seed", "overwrite", "speed", "ood", "dry_run",
                                     "replace_other_runs")}
        objective = options.get("objective", "task")
        self.plug = get_objective(objective)
        key = {"teacher": content_fingerprint(teacher_path),
               "task": source.name if source is not None else None,
               "layers": layers, "budget": str(self.budget),
               "method": options.get("method", "graft"),
               "strategy": options.get("strategy", "distill"),
               "precision": options.get("precision", "auto"),
               # other objectives and their texts (a classifier's keys stay as they were)
               **({} if objective == "task" else {
                   "objective": objective, "texts": content_fingerprint(options["texts"])
                   if options.get("texts") is not None else None})}
        self.folder = cache_root(options.get("cache_dir")) / "probes" / short_hash(
            json.dumps(key, sort_keys=True))

    def choose(self, candidates: Mapping[str, Mapping]) -> dict:
        scores, seconds = {}, 0.0
        for name, override in candidates.items():
            slug = "".join(c if c.isalnum() else "-" for c in name)
            record = compress(self.teacher_path, self.source, layers=self.layers,
                              out_dir=self.folder / slug, budget=self.budget, seed=0,
                              speed=False, ood=False, replace_other_runs=True,
                              **{**self.options, **override})
            scores[name] = self.plug.probe_score(record)
            seconds += record["seconds"]
        names = list(candidates)
        best = max(range(len(names)), key=lambda i: (scores[names[i]] or 0.0, -i))
        return {"chosen": names[best], "index": best, "dev_retention": scores,
                "budget": str(self.budget), "seconds": round(seconds, 2),
                "folder": str(self.folder)}
