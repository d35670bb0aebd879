"""`--method auto`, `--lr auto` and `--plan auto`: the recipe chosen for the model, on dev.

A rate that suits a narrow, already distilled 6-layer encoder (4e-4) wrecks a 768-wide
12-layer one, which layers to merge depends on the model too (DESIGN section 12), and on a
12-layer encoder keeping the bottom layers (drop-top) can beat every graft within a budget
(BENCHMARKS.md, "Levers at 12 -> 6"). So all three are chosen per teacher, method, strategy
and depth by short probes: each candidate is a `compress` run at a small share of the run's
budget (seed 0, dev and test scored, no out-of-domain sets, no timing), and the best dev
retention of the task's primary metric wins (ties: the earlier candidate). Minitron (2024):
rank after a short training run, never by the surgery-only score, which misranks candidates.
Per method, the learning rate is chosen first (on its own plan), then graft's plan at that
rate; `method="auto"` then keeps the method whose best probe is best (the objective's
`auto_methods`, each at its own rate: no method is judged at another's). Probes live under
the cache folder (`probes/`), keyed by what they depend on, so every seed and every later
run of the same teacher, method and depth reuses them; their cost is recorded beside the
run's, under `choices`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from layergraft.data.tasks import TaskSource, as_source
from layergraft.errors import LayergraftError
from layergraft.objectives.base import get_objective
from layergraft.objectives.runs import RESULTS_NAME
from layergraft.objectives.strategies import UNTRAINED
from layergraft.pipeline.compress import compress
from layergraft.surgery.plan import plan_spans
from layergraft.training.budget import Budget
from layergraft.training.train import TrainConfig, student_training
from layergraft.utils import cache_root, content_fingerprint, short_hash, write_json_atomic

LR_GRID = (2e-5, 5e-5, 1e-4, 2e-4, 4e-4)
PROBE_SHARE = 0.125  # of the run's budget, per candidate


def best_on_dev(scores: Sequence[float | None]) -> int:
    """The index of the best dev score (a missing one counts as 0; ties: the earlier)."""
    return max(range(len(scores)), key=lambda i: (scores[i] or 0.0, -i))


def intact_candidates(target_layers: int) -> list[int]:
    """How many bottom layers a probed plan keeps intact: about a third, a half and two
    thirds of the student's depth (distinct, at least one, below the depth)."""
    counts = {max(1, round(target_layers * f)) for f in (1 / 3, 1 / 2, 2 / 3)}
    return sorted(c for c in counts if c < target_layers)


@dataclass
class Recipe:
    """One method's choices: its rate, its plan, and its best probe on dev."""

    method: str
    training: TrainConfig | None
    plan: str | None
    choices: dict = field(default_factory=dict)
    score: float | None = None  # the chosen probe's dev score (None: nothing probed)
    seconds: float = 0.0  # what its probes cost

    def note(self, name: str, choice: dict) -> None:
        self.choices[name] = choice
        self.score = choice["dev_retention"][choice["chosen"]]
        self.seconds = round(self.seconds + choice["seconds"], 2)


def compress_auto(teacher_path: str, task: str | TaskSource | None, *, layers: int,
                  out_dir: str | os.PathLike, learning_rate: float | str | None = None,
                  plan: str | None = None, budget: Budget | str | None = None,
                  training: TrainConfig | None = None, probe_share: float = PROBE_SHARE,
                  objective: str = "task", method: str = "graft", **options) -> dict:
    """`compress`, with `learning_rate="auto"`, `plan="auto"` and/or `method="auto"` chosen
    by probes first (any other plan: `uniform`, `intact:K` or explicit spans); the choices
    and their cost are added to the results as `choices`. `method="auto"` probes each of the
    objective's `auto_methods` at its own rate (and graft at its own plan), with the rate and
    plan chosen too unless given. `options` go to every `compress` call (`budget`: the
    objective's default unless given). A probe is ranked by its objective's `probe_score` (a
    classifier: dev retention of the primary metric; a sentence encoder: held-out mean cosine
    to the teacher)."""
    pairs = options.pop("pairs", None)
    if plan is not None and pairs:
        raise LayergraftError("--plan and --pairs both give the plan: pass one")
    plan = plan or pairs
    plug = get_objective(objective)
    if method == "auto":
        learning_rate = "auto" if learning_rate is None else learning_rate
        plan = "auto" if plan is None else plan
    if learning_rate == "auto" and options.get("strategy", "distill") in UNTRAINED:
        learning_rate = None  # a student that is not trained has no rate to choose
    if options.get("dry_run") and "auto" in (learning_rate, plan, method):
        return {"status": "to do", "out": str(out_dir), "settings": None,
                "note": "--method, --lr and --plan auto are chosen by probes when the run "
                        "starts"}
    budget = plug.default_budget if budget is None else budget
    source = as_source(task) if task is not None else None
    options["objective"] = objective
    if learning_rate is not None:
        training = training or student_training()
    if learning_rate not in (None, "auto"):
        training = replace(training, learning_rate=float(learning_rate))
    depth = plug.depth(teacher_path) if plan or learning_rate == "auto" else 0
    methods = plug.auto_methods if method == "auto" else (method,)
    recipes = [_recipe(Prober(teacher_path, source, layers, budget, probe_share,
                              {**options, "method": name}),
                       name, training, learning_rate, plan, depth, layers, method == "auto")
               for name in methods]
    best = best_on_dev([r.score for r in recipes])
    chosen = recipes[best]
    choices = dict(chosen.choices)
    if method == "auto":
        choices["method"] = {
            "chosen": chosen.method, "index": best,
            "dev_retention": {r.method: r.score for r in recipes},
            "recipes": {r.method: {"learning_rate": (r.training.learning_rate
                                                     if r.training else None),
                                   "plan": r.plan or "uniform"} for r in recipes},
            "budget": str(Budget.parse(budget).share(probe_share)),
            "seconds": round(sum(r.seconds for r in recipes), 2)}
    record = compress(teacher_path, source, layers=layers, out_dir=out_dir, budget=budget,
                      training=chosen.training, method=chosen.method,
                      pairs=plan_spans(chosen.plan, depth, layers) if chosen.plan else None,
                      **options)
    if choices and not options.get("dry_run"):
        record["choices"] = choices
        write_json_atomic(Path(out_dir) / RESULTS_NAME, record)
    return record


def _recipe(probe: Prober, method: str, training: TrainConfig | None,
            learning_rate: float | str | None, plan: str | None, depth: int, layers: int,
            scored: bool) -> Recipe:
    """`method`'s rate (when auto) and plan (when auto), by probes; with `scored`, one probe
    at the given recipe where nothing else was probed, so that methods can be ranked."""
    if method.startswith("drop-") and (plan in ("auto", "uniform") or scored):
        plan = None  # a drop method keeps layers by its own rule: there is no plan to choose
    recipe = Recipe(method, training, plan)
    if learning_rate == "auto":
        spans = None if plan == "auto" else plan_spans(plan, depth, layers)
        recipe.note("learning_rate", probe.choose(
            {f"lr {rate:g}": {"training": replace(training, learning_rate=rate),
                              "pairs": spans} for rate in LR_GRID}))
        recipe.training = replace(training, learning_rate=LR_GRID[
            recipe.choices["learning_rate"]["index"]])
    if plan == "auto":
        names = ["uniform", *(f"intact:{k}" for k in intact_candidates(layers))]
        recipe.note("plan", probe.choose(
            {name: {"training": recipe.training, "pairs": plan_spans(name, depth, layers)}
             for name in names}))
        recipe.plan = names[recipe.choices["plan"]["index"]]
    if scored and not recipe.choices:
        recipe.note("as given", probe.choose(
            {"as given": {"training": recipe.training,
                          "pairs": plan_spans(plan, depth, layers) if plan else None}}))
    return recipe


class Prober:
    """Short runs of one teacher, task, method, strategy and depth, cached by what they
    depend on; `choose` runs (or reuses) one per candidate and names the best on dev. A
    candidate equal to one already run in this process (graft's uniform plan at the rate
    its sweep chose) is not run again."""

    def __init__(self, teacher_path: str, source: TaskSource, layers: int,
                 budget: Budget | str, share: float, options: Mapping) -> None:
        self.teacher_path, self.source, self.layers = teacher_path, source, layers
        self.budget = Budget.parse(budget).share(share)
        self.options = {k: v for k, v in options.items()
                        if k not in ("seed", "overwrite", "speed", "ood", "dry_run",
                                     "replace_other_runs")}
        self.seen: dict[str, dict] = {}  # repr(override) -> its record
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
            known = repr(sorted(override.items()))
            record = self.seen.get(known)
            if record is None:
                slug = "".join(c if c.isalnum() else "-" for c in name)
                record = compress(self.teacher_path, self.source, layers=self.layers,
                                  out_dir=self.folder / slug, budget=self.budget, seed=0,
                                  speed=False, ood=False, replace_other_runs=True,
                                  **{**self.options, **override})
                self.seen[known] = record
                seconds += record["seconds"]
            scores[name] = self.plug.probe_score(record)
        names = list(candidates)
        best = best_on_dev([scores[name] for name in names])
        return {"chosen": names[best], "index": best, "dev_retention": scores,
                "budget": str(self.budget), "seconds": round(seconds, 2),
                "folder": str(self.folder)}


def describe_choices(record: Mapping) -> str | None:
    """One line of what the probes chose and what they cost (None: nothing was chosen)."""
    choices = record.get("choices") or {}
    picked = {k: v for k, v in choices.items() if k in ("method", "learning_rate", "plan")}
    if not picked:
        return None
    parts = [f"method {picked['method']['chosen']}"] if "method" in picked else []
    if "learning_rate" in picked:
        parts.append(f"lr {picked['learning_rate']['chosen'].removeprefix('lr ')}")
    if "plan" in picked:
        parts.append(f"plan {picked['plan']['chosen']}")
    seconds = (picked["method"]["seconds"] if "method" in picked
               else sum(c["seconds"] for c in picked.values()))
    budget = next(iter(picked.values()))["budget"]
    return (f"chose {', '.join(parts)} on dev (probes of {budget} each, {seconds:.0f} s; "
            "cached for later runs)")
