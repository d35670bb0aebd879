"""What issue 35's width stage runs (suites/width.py runs it, report/width_section.py reports
it): graft students at depth x FFN width, seeds for the chosen points, and the backends every
shape is timed on. Pure: reads rows, runs nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layergraft.report.stats import pareto_front

TASK = "movie-sentiment"
# model -> (depths, FFN widths): the teacher's full width first (MiniLM: 6 layers, 1536)
GRIDS: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "minilm": ((3, 2, 1), (1536, 1152, 768, 384)),
    "mpnet": ((4, 3, 2), (3072, 2304, 1536, 768)),  # optional (--model mpnet)
}
SEEDS, EXTRA_SEEDS = (0,), (1, 2)  # seeds 1 and 2 for the chosen and depth-alone points
BACKENDS = ("torch-fp32", "onnx-int8", "onnx-opt-int8", "onnx-int8-static")
THREADS = 1  # issue 35: every speed at one thread
STRATEGY = "distill"  # graft's default recipe (issue 13: no lever beat it)


@dataclass(frozen=True)
class Point:
    """One graft run of the grid."""

    model: str
    layers: int
    ffn_size: int
    seed: int = 0

    @property
    def shape(self) -> str:
        return f"{self.layers}L-ffn{self.ffn_size}"  # speedup.Shape's name

    @property
    def name(self) -> str:
        return f"{self.model}-{self.shape}-s{self.seed}"

    @property
    def full_width(self) -> bool:
        return self.ffn_size == GRIDS[self.model][1][0]


def grid(model: str) -> list[Point]:
    """Every shape of `model`'s grid at seed 0, deepest and widest first."""
    depths, widths = GRIDS[model]
    return [Point(model, n, w) for n in depths for w in widths]


def dev_retention(rows: Sequence[Mapping], point: Point) -> float | None:
    """The run's dev retention (its task's first metric), None while it is not done."""
    for row in rows:
        if (row.get("kind") == "run" and row.get("run") == point.name
                and row.get("split") == "dev"):
            return row["retention"]
    return None


def best_speeds(rows: Sequence[Mapping], model: str) -> dict[str, float]:
    """Each shape's fastest measured speed-up over the teacher's torch-fp32, on any CPU and
    backend (what decides whether a point can reach a target anywhere)."""
    best: dict[str, float] = {}
    for row in rows:
        if row.get("kind") == "speed" and row.get("model") == model:
            best[row["shape"]] = max(best.get(row["shape"], 0.0), row["throughput_ratio"])
    return best


def chosen(rows: Sequence[Mapping], model: str) -> list[Point] | None:
    """The seed-0 points on the dev Pareto front of speed against retention (those the
    targets read), or None until every seed-0 run and speed is in."""
    speeds = best_speeds(rows, model)
    points = grid(model)
    scores = [dev_retention(rows, p) for p in points]
    if any(s is None for s in scores) or any(p.shape not in speeds for p in points):
        return None
    front = pareto_front([(speeds[p.shape], s) for p, s in zip(points, scores, strict=True)])
    return [points[i] for i in front]


def plan(rows: Sequence[Mapping], model: str = "minilm") -> list[tuple[Point, str | None]]:
    """Every run with why it waits (None: ready): the grid at seed 0, then seeds 1 and 2 of
    the chosen points once those are known, then of the full-width shapes (depth alone: what
    "width that pays" compares the narrowed points against needs their seed std too)."""
    planned: list[tuple[Point, str | None]] = [(p, None) for p in grid(model)]
    picked = chosen(rows, model)
    if picked is None:
        return planned + [(Point(model, 0, 0, seed), "the seed-0 grid and its speeds")
                          for seed in EXTRA_SEEDS]
    seeded = picked + [p for p in grid(model) if p.full_width and p not in picked]
    return planned + [(Point(model, p.layers, p.ffn_size, seed), None)
                      for p in seeded for seed in EXTRA_SEEDS]
