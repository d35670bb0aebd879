"""Issue 35's width stage: graft students at depth x FFN width on movie-sentiment, every
shape timed once per CPU and backend, for the Pareto front of speed against retention.

    python benchmarks/width.py                  # the grid, the speeds, then the seeds
    python benchmarks/width.py --model mpnet    # the optional 12-layer grid
    python benchmarks/width.py --dry-run        # what is planned and what is done

The teacher is the offline suite's (benchmarks/work/teachers/movie-sentiment, made by its
recipe when missing; MPNet: the 12-layer suite's). Every point (lib/width_plan.py: depths
x FFN widths, seed 0; then seeds 1 and 2 for the points on the dev front and for the
full-width shapes) is one resumable graft run (distilled on the suite's full budget,
`--ffn-size N --ffn-size-all` below full width) under benchmarks/work/width/runs/,
claimed by a lock so that one process per core can share the work. Runs time nothing
themselves: speed depends on the shape alone, so each backend times every shape once, in
ONE interleaved run with the teacher on torch-fp32
(`layergraft.pipeline.speedup.shape_table`: batch 32, dev lengths, 1 thread),
named by the CPU (`lib.measure.cpu_name`) and its capability; a CPU and backend measured
once is not measured again unless `--remeasure`. Rows go to benchmarks/results/width.json,
replaced atomically; report/width_section.py judges the targets from them alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lib import measure
from lib.jsonstore import claim
from lib.stagecli import plan_line
from lib.stages import FULL_BUDGET, PRECISION
from lib.width_plan import BACKENDS, GRIDS, STRATEGY, TASK, THREADS, Point, dev_retention, plan
from lib.width_plan import grid as shape_points

from layergraft.pipeline.compare import record_rows
from layergraft.pipeline.compress import compress
from layergraft.training.train import student_training
from suites.offline import ROOT, Store, Suite, make_teacher, of_kind

WORK = ROOT / "benchmarks" / "work" / "width"
RESULTS = ROOT / "benchmarks" / "results" / "width.json"


def teacher_for(model: str) -> Path:
    """The model's movie-sentiment teacher, fine-tuned by its suite's recipe if missing."""
    if model == "mpnet":
        from suites.mpnet import SUITE

        return make_teacher(SUITE, TASK)
    return make_teacher(Suite(), TASK)


def run_point(point: Point, teacher: Path, store: Store) -> None:
    """One graft run (unless done or claimed by another process) and its rows."""
    from layergraft.surgery.methods import GraftOptions

    with claim(WORK / "claims" / f"{point.name}.lock") as mine:
        if not mine or dev_retention(store.rows, point) is not None:
            return
        graft = None if point.full_width else GraftOptions(ffn_size=point.ffn_size,
                                                           ffn_size_all=True)
        record = compress(str(teacher), TASK, layers=point.layers, method="graft",
                          strategy=STRATEGY, seed=point.seed, budget=FULL_BUDGET,
                          out_dir=WORK / "runs" / point.name, graft_options=graft,
                          precision=PRECISION, speed=False, ood=False, progress=False,
                          training=student_training(group_by_length=True))
        extra = {"kind": "run", "run": point.name, "model": point.model,
                 "ffn_size": point.ffn_size, "shape": point.shape}
        store.put([{**row, **extra} for row in record_rows(record)],
                  of_kind("run", run=point.name))


def int8_units() -> list[str]:
    """The CPU's int8 dot-product units (VNNI, AMX) from /proc/cpuinfo: the targets differ."""
    info = Path("/proc/cpuinfo")
    text = info.read_text(errors="replace") if info.is_file() else ""
    flags = next((line.partition(":")[2].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def measure_speeds(model: str, teacher: Path, store: Store, remeasure: bool = False) -> None:
    """Every shape of the grid on every backend of this CPU, one interleaved run each."""
    import torch

    from layergraft.data.tasks import as_source
    from layergraft.models import load_for_task
    from layergraft.pipeline.speedup import Shape, shape_table
    from layergraft.runtime import cpu_capability

    cpu, capability = measure.cpu_name(), cpu_capability()
    source = as_source(TASK)
    loaded = source.load()
    shapes = [Shape(p.layers, p.ffn_size) for p in shape_points(model)]
    for backend in BACKENDS:
        same = of_kind("speed", model=model, cpu=cpu, backend=backend)
        if not remeasure and any(same(r) for r in store.rows):
            continue
        with claim(WORK / "claims" / f"speed-{model}-{backend}.lock") as mine:
            if not mine:
                continue
            model_, tokenizer = load_for_task(str(teacher), loaded)
            table = shape_table(str(teacher), source, shapes, backend=backend, threads=THREADS,
                                device=torch.device("cpu"),
                                max_length=student_training().max_length,
                                cache_dir=None if not remeasure else WORK / "cache-remeasure",
                                loaded=(model_, tokenizer, loaded))
            store.put([{"kind": "speed", "model": model, "cpu": cpu,
                        "cpu_capability": capability, "int8_units": int8_units(),
                        "backend": backend,
                        "threads": table["threads"], "reference": table["reference"], **row}
                       for row in table["shapes"]], same)


def dry_run(model: str, rows: Sequence[dict]) -> str:
    """The plan, what is done, and which CPUs and backends are timed."""
    lines = [f"width stage ({model}): depths {GRIDS[model][0]} x FFN widths {GRIDS[model][1]}"]
    lines += [plan_line(p.name, pending, dev_retention(rows, p) is not None)
              for p, pending in plan(rows, model)]
    timed = sorted({(r["cpu"], r["backend"]) for r in rows
                    if r.get("kind") == "speed" and r.get("model") == model})
    lines.append("speeds: " + ("; ".join(f"{c} {b}" for c, b in timed) or "none yet")
                 + f" (this CPU: {measure.cpu_name()})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(GRIDS), default="minilm")
    parser.add_argument("--dry-run", action="store_true",
                        help="Print the plan and what is done; run nothing.")
    parser.add_argument("--remeasure", action="store_true",
                        help="Time this CPU's shapes again even if they are recorded.")
    args = parser.parse_args(argv)
    store = Store(RESULTS)
    if args.dry_run:
        print(dry_run(args.model, store.rows))
        return
    teacher = teacher_for(args.model)
    for point, pending in plan(store.rows, args.model):
        if pending is None:
            run_point(point, teacher, store)
    measure_speeds(args.model, teacher, store, args.remeasure)
    for point, pending in plan(store.rows, args.model):  # the chosen and depth-alone seeds
        if pending is None:
            run_point(point, teacher, store)
