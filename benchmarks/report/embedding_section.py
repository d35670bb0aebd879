"""BENCHMARKS.md's section for issue 16 (sentence-embedding students), from
benchmarks/results/embeddings.json alone: the tables (teacher row first, seed means ± sample
std) and the issue's targets, each MET, MISSED or NOT YET MEASURED."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib.embeddings_plan import BUDGET, DEPTHS, EXTRA_SEEDS, HEAL_STEPS, RECIPE, strongest_baseline

from layergraft.embeddings.report import markdown, seed_means
from layergraft.report.tables import markdown_from_cells
from report.targets import MET, MISSED, NOT_MEASURED

PROBES = ("movie-sentiment.probe_accuracy", "movie-rating.ridge_spearman")
TEACHER_LAYERS = {"minilm": 6, "mpnet": 12}
SPEED_SHARE = 0.97


def section(path: Path) -> list[str]:
    rows = json.loads(path.read_text()) if path.is_file() else []
    parts = ["## Smaller embedding models (issue 16)", _intro()]
    env = next((r for r in rows if r.get("run") == "environment"), None)
    if env is not None:
        versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        parts.append(f"Machine: {env['cpu']} ({env['cpu_capability']}), {env['cores']} "
                     f"cores, device {env['device']}, {env['precision']}. Versions: {versions}; "
                     f"commit {env['commit'] or 'unknown'}. Seeds: 0 for every run; "
                     f"{', '.join(map(str, EXTRA_SEEDS))} as well for graft, the recipe "
                     f"({RECIPE}) and the strongest baseline.")
    checks = targets(rows)
    parts.append(markdown_from_cells(["target", "needed", "measured", "status"], checks))
    for model, depths in DEPTHS.items():
        for layers in depths:
            entries = _entries(rows, model, layers)
            if entries:
                teacher = [e for e in _entries(rows, model, TEACHER_LAYERS[model])
                           if e["method"] == "teacher"]
                parts += [f"### {model}, {TEACHER_LAYERS[model]} -> {layers} layers",
                          markdown(teacher + entries)]
    if len(parts) == 3:
        parts.append("No runs yet: `python benchmarks/embeddings.py`.")
    return parts


def _intro() -> str:
    return (f"Generated from `benchmarks/results/embeddings.json` (`python "
            f"benchmarks/embeddings.py`, resumable; `--stage mpnet` for all-mpnet-base-v2). "
            f"Students train on the teacher's embeddings of movie-sentiment's train texts, "
            f"{BUDGET}, embedding MSE; `{RECIPE}` + distill is the sentence-transformers "
            f"layer-reduction recipe; `heal{HEAL_STEPS}` rows heal the new layers for "
            f"{HEAL_STEPS} steps first (charged against the same budget). Mean cosine: on "
            "held-out train texts; neighbour agreement: top-10 neighbours in the out-of-domain "
            "tweets + Amazon + NYT sentences (13,098); probes on frozen embeddings, train -> "
            "test: logistic regression and kNN (cosine, k=10) on movie-sentiment, ridge "
            "Spearman on movie-rating; retention = student / teacher. Speed: sentences/s of "
            "the transformers, student / teacher, timed interleaved in one run on held-out "
            "texts' real lengths (ideal: teacher layers / student layers). MTEB is not run: "
            "its tasks download from the Hugging Face hub, which this suite never uses.")


def _entries(rows, model: str, layers: int) -> list[dict]:
    mine = [r for r in rows if r.get("model") == model and r.get("layers") == layers
            and r.get("run") != "environment"]
    named = [{**r, "strategy": r["strategy"] + (f"+heal{r['heal']}" if r.get("heal") else "")}
             for r in mine]
    order = {"teacher": 0, "none": 1}
    return sorted(seed_means(named), key=lambda e: (order.get(e["method"], 2),
                                                    order.get(e["strategy"], 2), e["method"]))


def _find(rows, model: str, layers: int, method: str, strategy: str = "distill"):
    return next((e for e in _entries(rows, model, layers)
                 if e["method"] == method and e["strategy"] == strategy), None)


def targets(rows: Sequence[Mapping]) -> list[list[str]]:
    """[target, needed, measured, status] rows."""
    checks = []
    for layers, share in ((3, 0.995), (2, 0.985)):
        graft = _find(rows, "minilm", layers, "graft")
        for probe in PROBES:
            checks.append(_at_least(f"MiniLM 6->{layers} {probe} retention", graft,
                                    f"{probe}.retention", share))
    graft3 = _find(rows, "minilm", 3, "graft")
    checks.append(_at_least("MiniLM 6->3 mean cosine", graft3, "mean_cosine", 0.97))
    checks.append(_at_least("MiniLM 6->3 top-10 agreement", graft3, "agreement", 0.80))
    for layers in DEPTHS["minilm"]:
        graft, recipe = (_find(rows, "minilm", layers, m) for m in ("graft", RECIPE))
        for field in ("mean_cosine", "agreement"):
            checks.append(_above(f"MiniLM 6->{layers} graft above the recipe ({field})",
                                 graft, recipe, field))
    mpnet, mpnet_recipe = (_find(rows, "mpnet", 4, m) for m in ("graft", RECIPE))
    for probe in PROBES:
        checks.append(_at_least(f"mpnet 12->4 {probe} retention", mpnet, f"{probe}.retention",
                                0.994))
    for field in ("mean_cosine", "agreement"):
        checks.append(_above(f"mpnet 12->4 graft above the recipe ({field})", mpnet,
                             mpnet_recipe, field, seeds=1))
    for model, depths in DEPTHS.items():
        for layers in depths:
            graft = _find(rows, model, layers, "graft")
            ratio = None if graft is None or graft.get("speed_ratio") is None else \
                graft["speed_ratio"] / graft["ideal_ratio"]
            checks.append([f"{model} {layers} layers: throughput / ideal", f"≥ {SPEED_SHARE}",
                           "—" if ratio is None else f"{ratio:.3f}",
                           _status(ratio, ratio is not None and ratio >= SPEED_SHARE)])
    rivals = {n: strongest_baseline(rows, "minilm", n) for n in DEPTHS["minilm"]}
    checks.append(["strongest baseline (seed-0 held-out mean cosine)", "—",
                   ", ".join(f"{n} layers: {r or '—'}" for n, r in rivals.items()), "—"])
    return checks


def _at_least(name: str, entry, field: str, needed: float) -> list[str]:
    value = None if entry is None else entry.get(field)
    percent = field != "mean_cosine"  # a cosine reads as a cosine, the rest as percents

    def show(x: float) -> str:
        return f"{100 * x:.2f}%" if percent else f"{x:.4f}"

    shown = "—" if value is None else f"{show(value)} ({entry['n']} seeds)"
    return [name, f"≥ {show(needed)}", shown,
            _status(value, value is not None and value >= needed)]


def _above(name: str, graft, recipe, field: str, seeds: int = 3) -> list[str]:
    """graft's mean above the recipe's by more than the combined seed std (sqrt of the sum
    of the variances); one seed each where `seeds` is 1 (then: simply above)."""
    needed = "gap > combined std" if seeds > 1 else "above (1 seed each)"
    if graft is None or recipe is None or min(graft["n"], recipe["n"]) < seeds:
        return [name, needed, "—", NOT_MEASURED]
    gap = graft[field] - recipe[field]
    if seeds == 1:
        return [name, needed, f"gap {100 * gap:+.2f} points", MET if gap > 0 else MISSED]
    spread = math.hypot(graft.get(f"{field}_std") or 0.0, recipe.get(f"{field}_std") or 0.0)
    return [name, needed, f"gap {100 * gap:+.2f} vs std {100 * spread:.2f} points",
            MET if gap > spread else MISSED]


def _status(value, met: bool) -> str:
    return NOT_MEASURED if value is None else (MET if met else MISSED)

