"""BENCHMARKS.md's LLM section (issue 34), from benchmarks/results/lm.json alone: the teacher,
a table per depth (seed means ± sample std), the budget in tokens, the single-core hours and
the issue's targets, each MET, MISSED or NOT YET MEASURED."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib import lm_plan as lm
from lib.jsonstore import read_rows

from layergraft.report.tables import markdown_from_cells
from report.targets import MET, MISSED, NOT_MEASURED, SPEED_SHARE, Check

RATIO = {22: 1.10, 15: 1.35}  # graft + distill test perplexity over the teacher's, at most
AGREEMENT_DEPTHS = (22,)  # next-token agreement above every baseline's
RIVALS_FREE = ("shortgpt", "sleb", "angular")  # angular: Gromov et al.'s block drop


def section(path: Path) -> list[str]:
    rows = read_rows(path)
    runs = [r for r in rows if r.get("kind") == "run"]
    parts = ["## Decoder LLM: SmolLM2-135M cut from 30 to 22 and 15 layers (issue 34)", _intro()]
    if not runs:
        return parts + ["No runs yet: `python benchmarks/lm.py`."]
    cells = seed_stats(runs)
    parts += [_teacher(runs), _hours(runs), markdown_from_cells(
        ["target", "scope", "needed", "measured", "status"],
        [[c.target, c.scope, c.needed, c.measured, c.status] for c in evaluate(cells)])]
    for layers in lm.DEPTHS:
        parts += [f"### 30 -> {layers} layers", _depth_table(cells, layers)]
    failures = [f"- {r['run']}: {r['error']}" for r in rows if r.get("kind") == "failure"]
    return parts + (["Failed runs (a rerun retries them):", "\n".join(failures)]
                    if failures else [])


def _intro() -> str:
    return (f"Generated from `benchmarks/results/lm.json` by `python benchmarks/lm.py` "
            f"(resumable, one process per core; `--dry-run` shows what is left, with hours). "
            f"Teacher: SmolLM2-135M-Instruct (`layergraft assets smollm2`), fp32, one thread. "
            f"Every method gets the same budget: {lm.budget_line()}. Strategies: none "
            f"(surgery only), heal (retraining-free, the new layers alone), distill. Graft "
            f"and the strongest baseline (lowest seed-0 dev perplexity, never test) get seeds "
            f"0-2 healed and distilled; the rest seed 0. Perplexity is exp(mean NLL) over "
            f"non-overlapping windows; KL and top-1 agreement are to the teacher on test.")


def seed_stats(runs: Sequence[Mapping]) -> dict[tuple[int, str, str], dict]:
    """(layers, method, strategy) -> seed means and sample stds (None with one seed)."""
    groups: dict[tuple[int, str, str], list[Mapping]] = {}
    for r in runs:
        groups.setdefault((r["layers"], r["method"], r["strategy"]), []).append(r)
    stats = {}
    for cell, rows in groups.items():
        entry = {"n": len(rows), "tokens": rows[0]["tokens"],
                 "teacher_test_ppl": rows[0]["teacher_test_ppl"],
                 "train_seconds": statistics.mean(r["train_seconds"] for r in rows),
                 "speed": next(((r["prefill_ratio"], r["decode_ratio"], r["ideal_ratio"])
                                for r in rows if r.get("prefill_ratio")), None)}
        for field in ("test_ppl", "ood_ppl", "test_kl", "test_agreement"):
            values = [r[field] for r in rows]
            entry[field] = statistics.mean(values)
            entry[f"{field}_std"] = statistics.stdev(values) if len(values) > 1 else None
        stats[cell] = entry
    return stats


def _teacher(runs: Sequence[Mapping]) -> str:
    r = runs[0]
    return markdown_from_cells(
        ["model", "layers", "dev ppl", "test ppl", f"{lm.OOD} ppl", "windows x tokens"],
        [["teacher", str(r["teacher_layers"]), f"{r['teacher_dev_ppl']:.2f}",
          f"{r['teacher_test_ppl']:.2f}", f"{r['teacher_ood_ppl']:.2f}",
          f"{r['windows']} x {r['window']} per text"]])


def _hours(runs: Sequence[Mapping]) -> str:
    spent = sum(r.get("run_seconds") or 0.0 for r in runs) / 3600
    left = sum(lm.estimated_hours(runs, p.key) for s in lm.STAGES for p in lm.plan(s, runs)
               if not any(r["run"] == p.key.name for r in runs))
    return (f"{len(runs)} runs so far, {spent:.1f} single-core hours; about {left:.1f} "
            f"single-core hours of the planned stage left (estimated).")


def _mean(entry: Mapping, field: str, digits: int = 2) -> str:
    std = entry[f"{field}_std"]
    return f"{entry[field]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _depth_table(cells: Mapping, layers: int) -> str:
    table = []
    for strategy in lm.STRATEGIES:
        for method in lm.METHODS:
            e = cells.get((layers, method, strategy))
            if e is None:
                continue
            name = f"**{method}**" if method == "graft" else method
            table.append([name, strategy, str(e["n"]), _mean(e, "test_ppl"),
                          _mean(e, "ood_ppl"), _mean(e, "test_kl", 3),
                          f"{100 * e['test_agreement']:.1f}", f"{e['tokens']:,}",
                          f"{e['train_seconds']:.0f}"])
    return markdown_from_cells(["method", "strategy", "seeds", "test ppl", f"{lm.OOD} ppl",
                                "KL", "agreement %", "tokens", "train s"], table)


def below_every(scope: str, target: str, graft: Mapping | None,
                rivals: Mapping[str, Mapping | None], field: str = "test_ppl",
                by_std: bool = True, higher: bool = False) -> Check:
    """graft's seed mean below (`higher`: above) each rival's, by more than the combined seed
    std when `by_std`; decided early only where no missing row can change it."""
    needed = f"{'above' if higher else 'below'} {', '.join(rivals)}" + \
        (" by > combined seed std" if by_std else "")
    known = {m: e for m, e in rivals.items() if e is not None}
    if graft is None:
        return Check(target, scope, needed, "graft not run yet", NOT_MEASURED)
    sign = 1.0 if higher else -1.0
    margins = {m: (sign * (graft[field] - e[field]),
                   math.hypot(graft[f"{field}_std"] or 0.0, e[f"{field}_std"] or 0.0)
                   if by_std else 0.0) for m, e in known.items()}
    worst = min(margins, key=lambda m: margins[m][0] - margins[m][1]) if margins else None
    measured = (f"closest {worst}: {graft[field]:.3f} vs {known[worst][field]:.3f} "
                f"(std {margins[worst][1]:.3f})" if worst else "no rival run yet")
    if worst and margins[worst][0] - margins[worst][1] <= 0:
        return Check(target, scope, needed, measured, MISSED)
    if len(known) < len(rivals):
        missing = ", ".join(m for m in rivals if m not in known)
        return Check(target, scope, needed, f"{measured}; not run: {missing}", NOT_MEASURED)
    return Check(target, scope, needed, measured, MET)


def evaluate(cells: Mapping) -> list[Check]:
    """Every check of issue 34's targets on test, in the issue's order."""
    checks = []
    for layers in lm.DEPTHS:
        scope = f"30 -> {layers}"
        graft = cells.get((layers, "graft", "distill"))
        checks.append(_ratio(scope, graft, layers))
        rivals = {m: cells.get((layers, m, "distill")) for m in lm.BASELINES}
        checks.append(below_every(scope, "perplexity", graft, rivals))
        if layers in AGREEMENT_DEPTHS:
            checks.append(below_every(scope, "agreement", graft, rivals, "test_agreement",
                                      by_std=False, higher=True))
    for layers in lm.DEPTHS:
        healed = cells.get((layers, "graft", "heal"))
        for strategy in ("none", "heal"):
            rivals = {m: cells.get((layers, m, strategy)) for m in RIVALS_FREE}
            checks.append(below_every(f"30 -> {layers}, rivals {strategy}", "retraining-free",
                                      healed, rivals, by_std=False))
    return checks + [_speed(layers, cells.get((layers, "graft", "distill")))
                     for layers in lm.DEPTHS]


def _ratio(scope: str, graft: Mapping | None, layers: int) -> Check:
    needed = f"graft + distill test ppl <= {RATIO[layers]:.2f} x teacher's"
    if graft is None:
        return Check("quality", scope, needed, "not run yet", NOT_MEASURED)
    ratio = graft["test_ppl"] / graft["teacher_test_ppl"]
    return Check("quality", scope, needed, f"{ratio:.3f} x ({graft['test_ppl']:.2f})",
                 MET if ratio <= RATIO[layers] else MISSED)


def _speed(layers: int, graft: Mapping | None) -> Check:
    needed = f"prefill and decode >= {SPEED_SHARE} x ideal ({lm.TEACHER_LAYERS}/{layers})"
    if graft is None or graft["speed"] is None:
        return Check("speed", f"30 -> {layers}", needed, "not timed yet", NOT_MEASURED)
    prefill, decode, ideal = graft["speed"]
    met = min(prefill, decode) >= SPEED_SHARE * ideal
    return Check("speed", f"30 -> {layers}", needed,
                 f"prefill {prefill:.2f}x, decode {decode:.2f}x, ideal {ideal:.2f}x",
                 MET if met else MISSED)
