"""What issue 34's LLM stage runs (suites/lm.py runs it, report/lm_section.py reports it):
SmolLM2-135M cut from 30 to 22 and 15 layers by graft and every decoder baseline, the one
token budget they all share, the stages and the choices made on dev perplexity."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from layergraft.pipeline.compare import RunKey
from lib.stages import Planned

MODEL, TEXT, OOD = "smollm2", "movie-text", "editorials-text"
TEACHER_LAYERS = 30
DEPTHS = (22, 15)
BASELINES = ("shortgpt", "angular", "sleb", "drop-last", "laco", "streamline", "random")
METHODS = ("graft", *BASELINES)
STRATEGIES = ("none", "heal", "distill")
SEEDED = ("distill", "heal")  # graft and the strongest baseline get seeds 1 and 2 of these
EXTRA_SEEDS = (1, 2)
# The budget, in tokens, for every method: a distillation step is BATCH blocks of BLOCK
# tokens (the issue's ~2k tokens a step); healing gets at most a tenth of those tokens.
BLOCK, BATCH, HEAL_BATCH = 128, 16, 8
DISTILL_TOKENS = 200_000
DISTILL_STEPS = math.ceil(DISTILL_TOKENS / (BATCH * BLOCK))  # 98 steps: 200,704 tokens
HEAL_STEPS = DISTILL_TOKENS // 10 // (HEAL_BATCH * BLOCK)  # 19 steps: 19,456 tokens
LEARNING_RATE = 1e-4  # the lm objective's default student rate
EVAL_WINDOWS = 16  # windows of 1,024 tokens per text: movie-text dev, test and editorials
STAGES: Mapping[str, str] = {
    "L0": "surgery only: every method at 22 and 15 layers",
    "L1": f"retraining-free: every method healed {HEAL_STEPS} steps "
          f"({HEAL_STEPS * HEAL_BATCH * BLOCK:,} tokens)",
    "L2": f"every method distilled for {DISTILL_STEPS} steps "
          f"({DISTILL_STEPS * BATCH * BLOCK:,} tokens)",
    "L3": "seeds 1 and 2 for graft and the strongest baseline (seed-0 dev perplexity), "
          "healed and distilled, at both depths",
}
STAGE_OF = {"none": "L0", "heal": "L1", "distill": "L2"}
# Single-core hours a run takes before any is timed (the dry run uses the median of finished
# runs of the same method, strategy and depth once there are some). From the quick records
# (benchmarks/results/lm-quicklook/, AMD EPYC, one thread, fp32): prefill ~290 tokens/s, so
# scoring 16 windows of 3 texts with teacher and student is ~6 min; a training token costs ~3
# forward tokens: a distillation step of 2,048 tokens ~20 s (98 steps ~33 min, plus the
# teacher's top-k over the 216k train tokens once, ~12 min), a heal step of 1,024 ~13 s.
# SLEB and LaCo search greedily, scoring every candidate on 32 calibration blocks (4,096
# tokens, ~14 s) per removal or merge.
EVAL_HOURS, DISTILL_HOURS, HEAL_HOURS = 0.1, 0.55, 0.07
GREEDY_HOURS = {22: 0.8, 15: 1.3}  # sleb / laco surgery, depth by depth
GREEDY = ("sleb", "laco")


def run_key(method: str, strategy: str, layers: int, seed: int = 0) -> RunKey:
    """A cell's name and identity (healing alone is the `heal` strategy, never charged)."""
    return RunKey(method, strategy, layers, seed, heal=HEAL_STEPS if strategy == "heal" else 0)


def dev_perplexity(rows: Sequence[Mapping], layers: int, method: str,
                   strategy: str) -> float | None:
    """Seed-0 dev perplexity, where every choice of the stage is made (never on test)."""
    for row in rows:
        if row.get("kind", "run") == "run" and (row["layers"], row["method"], row["strategy"],
                                                row["seed"]) == (layers, method, strategy, 0):
            return row["dev_ppl"]
    return None


def strongest_baseline(rows: Sequence[Mapping], layers: int, strategy: str) -> str | None:
    """The baseline of lowest seed-0 dev perplexity with `strategy`, once every one ran."""
    scores = {m: dev_perplexity(rows, layers, m, strategy) for m in BASELINES}
    if any(v is None for v in scores.values()):
        return None
    return min(scores, key=lambda m: scores[m])


def plan(stage: str, rows: Sequence[Mapping] = ()) -> list[Planned]:
    """The runs of one stage in the order they run: graft first at each depth."""
    if stage in ("L0", "L1", "L2"):
        strategy = next(s for s, st in STAGE_OF.items() if st == stage)
        return [Planned(stage, TEXT, run_key(m, strategy, n)) for n in DEPTHS for m in METHODS]
    if stage != "L3":
        raise ValueError(f"unknown stage '{stage}': choose from {', '.join(STAGES)}")
    planned = []
    for strategy in SEEDED:
        for layers in DEPTHS:
            rival = strongest_baseline(rows, layers, strategy)
            pending = None if rival else f"every {strategy} baseline at {layers} layers"
            planned += [Planned(stage, TEXT, run_key(m, strategy, layers, seed), pending)
                        for seed in EXTRA_SEEDS for m in ("graft", rival or "<strongest>")]
    return planned


def estimated_hours(rows: Sequence[Mapping], key: RunKey) -> float:
    """Single-core hours of one run: the median of finished alike runs, else the model above."""
    seen = [r["run_seconds"] / 3600 for r in rows if r.get("kind", "run") == "run"
            and (r["method"], r["strategy"], r["layers"]) == (key.method, key.strategy,
                                                              key.layers)
            and r.get("run_seconds")]
    if seen:
        return statistics.median(seen)
    train = {"none": 0.0, "heal": HEAL_HOURS, "distill": DISTILL_HOURS}[key.strategy]
    # the search runs once per depth, in L0 (surgery only, first): the other strategies and
    # seeds replay its manifest from the suite's cache (objectives.lm.run, GREEDY_SEARCHES)
    searched = key.method in GREEDY and key.strategy == "none" and key.seed == 0
    return EVAL_HOURS + train + (GREEDY_HOURS[key.layers] if searched else 0.0)


def budget_line() -> str:
    """The budget every method gets, in tokens, as the report and the dry run state it."""
    return (f"distillation {DISTILL_STEPS} steps x {BATCH} blocks x {BLOCK} tokens = "
            f"{DISTILL_STEPS * BATCH * BLOCK:,} tokens (asked: {DISTILL_TOKENS:,}); healing "
            f"{HEAL_STEPS} steps x {HEAL_BATCH} x {BLOCK} = {HEAL_STEPS * HEAL_BATCH * BLOCK:,} "
            f"tokens (<= 10%), new layers only; evaluation {EVAL_WINDOWS} windows of 1,024 "
            f"tokens of each of {TEXT} dev, {TEXT} test and {OOD}")
