"""What issue 16's embedding stage runs: its settings, stages and plan, most informative first
(suites/embeddings.py runs it, report/embedding_section.py renders its rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layergraft.pipeline.compare import RunKey

TASK = "movie-sentiment"  # training texts: its train split
BUDGET = "1 epoch"
PRECISION = "fp32"
RECIPE = "drop-alternate"
BASELINES = ("drop-alternate", "drop-top", "random", "average")
DEPTHS = {"minilm": (3, 2), "mpnet": (4,)}
HEAL_STEPS = 60  # heal + distill for graft: 60 of the epoch's ~240 steps go to healing
HEAL_LR = 1e-4  # the rate these rows were measured at (the classification default is 3e-3)
EXTRA_SEEDS = (1, 2)
# Texts the "embedding" importance is measured on (the library's default is 2,000): each
# takes 16 backward passes, so 2,000 cost about four epochs of distillation on this CPU,
# while 256 cost half of one. Measured once and cached, shared by every graft run.
ANALYSIS_SAMPLES = 256
STAGES = {"minilm": "all-MiniLM-L6-v2, 6 -> 3 and 6 -> 2: every method, surgery only and "
                    "distilled; seeds 1, 2 for graft, the recipe and the strongest baseline; "
                    "heal + distill",
          "mpnet": "all-mpnet-base-v2, 12 -> 4: graft vs the recipe, seed 0"}


@dataclass(frozen=True)
class Planned:
    model: str
    key: RunKey
    heal: int = 0
    pending: str | None = None  # why it cannot run yet

    @property
    def name(self) -> str:
        return self.key.name + (f"-heal{self.heal}" if self.heal else "")


def strongest_baseline(rows: Sequence[Mapping], model: str, layers: int) -> str | None:
    """The baseline with the best held-out mean cosine after seed-0 distillation (None until
    all of them are in)."""
    scores = {r["method"]: r["mean_cosine"] for r in rows
              if r.get("model") == model and r["layers"] == layers and r["seed"] == 0
              and r["strategy"] == "distill" and not r.get("heal") and r["method"] in BASELINES}
    return max(scores, key=scores.get) if len(scores) == len(BASELINES) else None


def plan(stage: str, rows: Sequence[Mapping] = ()) -> list[Planned]:
    """The stage's runs, the most informative first: surgery only, then graft against the
    recipe (3 seeds: the headline target), then the other baselines, then the strongest
    baseline's extra seeds where it is not the recipe, then healing."""
    depths = DEPTHS[stage]
    if stage == "mpnet":
        return [Planned(stage, RunKey(m, s, n)) for s in ("none", "distill") for n in depths
                for m in ("graft", RECIPE)]
    methods = ("graft", *BASELINES)
    planned = [Planned(stage, RunKey(m, "none", n)) for n in depths for m in methods]
    planned += [Planned(stage, RunKey(m, "distill", n, s)) for s in (0, *EXTRA_SEEDS)
                for n in depths for m in ("graft", RECIPE)]
    planned += [Planned(stage, RunKey(m, "distill", n)) for n in depths for m in BASELINES
                if m != RECIPE]
    for n in depths:
        rival = strongest_baseline(rows, stage, n)
        if rival == RECIPE:
            continue
        waiting = None if rival else f"the seed-0 baselines at {n} layers"
        planned += [Planned(stage, RunKey(rival or "<strongest baseline>", "distill", n, s),
                            pending=waiting) for s in EXTRA_SEEDS]
    planned += [Planned(stage, RunKey("graft", "distill", n), heal=HEAL_STEPS) for n in depths]
    return planned


def run_settings() -> dict:
    """What every run of the stage shares; a stored row made with other settings is redone."""
    return {"task": TASK, "budget": BUDGET, "precision": PRECISION,
            "analysis_samples": ANALYSIS_SAMPLES}
