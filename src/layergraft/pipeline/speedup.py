"""`compress --speedup X`: the student shape that runs X times the teacher here, then the best.

Users ask for latency, not a layer count (issue 35, DESIGN section 15). A student's speed
depends on its shape alone (depth x FFN width), never on its weights, so each shape of the
grid (depths 1..L-1 x FFN widths 1, 3/4, 1/2, 1/4 and 1/8 of the teacher's; full width only
for a method that keeps whole layers) is timed once: a stand-in of that shape (the teacher
cut by a random graft, no training) runs in ONE `measure_speed` run, interleaved with the
teacher, at batch 32 on the task's dev lengths, 1 thread (or OMP_NUM_THREADS). The teacher
runs on torch-fp32 (what the speed-up is over), every shape on `--speedup-backend`. The
table is cached per teacher, task, backend, threads and CPU, so every seed and later run
chooses among the same figures, and the report's x axis is that one figure per shape.

At one depth a wider FFN only adds capacity, so each depth's widest shape that reaches X is
a candidate; quality across depths is not assumed monotone, so up to three of them (the
most parameters first: the most capacity for the speed asked) are compared by a short
probe each (`layergraft.pipeline.auto`'s: a small share of the budget, seed 0, cached,
ranked by dev retention). The best is trained on the full budget by `compress_auto` (so
`--lr auto` and `--plan auto` still apply) and returned; results.json records the whole
choice under `choices["speedup"]` and speedup.png draws it.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layergraft.data.tasks import Task, TaskSource, as_source
from layergraft.deploy.backends import BACKENDS, CPU_ONLY, ONNX_GRAPHS, TorchRunner, build_runner
from layergraft.errors import LayergraftError
from layergraft.models import load_for_task, resolve_model, save_model
from layergraft.objectives.base import get_objective
from layergraft.objectives.runs import RESULTS_NAME
from layergraft.pipeline.auto import PROBE_SHARE, Prober, best_on_dev, compress_auto
from layergraft.pipeline.bench import measure_speed, task_lengths
from layergraft.pipeline.bench_run import export_backends
from layergraft.report.figures import png_bytes
from layergraft.report.speedup_figure import speedup_figure
from layergraft.runtime import Runtime, cpu_capability
from layergraft.surgery.arch import ffn_width, num_layers, spec_for
from layergraft.surgery.graft import graft_model
from layergraft.surgery.methods import TAKES_OPTIONS, GraftOptions
from layergraft.surgery.width import resolve_ffn_size
from layergraft.training.budget import Budget
from layergraft.training.train import TrainConfig, student_training
from layergraft.utils import (
    cache_root,
    content_fingerprint,
    short_hash,
    write_bytes_atomic,
    write_json_atomic,
)

WIDTHS = (1.0, 0.75, 0.5, 0.25, 0.125)  # FFN widths timed, as fractions of the teacher's
MAX_PROBED = 3
BATCH_SIZE = 32
REFERENCE_BACKEND = "torch-fp32"  # the teacher's: what users run today
FIGURE_NAME = "speedup.png"


@dataclass(frozen=True)
class Shape:
    """A student's shape: what its speed depends on."""

    layers: int
    ffn_size: int
    heads: int | None = None  # attention heads (or KV groups), where a student has its own

    @property
    def name(self) -> str:
        heads = "" if self.heads is None else f"-h{self.heads}"
        return f"{self.layers}L-ffn{self.ffn_size}{heads}"


def shape_grid(depth: int, width: int, narrow: bool = True) -> list[Shape]:
    """Depths 1..depth-1 x the FFN widths of WIDTHS (only full width unless `narrow`), each
    distinct shape once, widest first within a depth."""
    sizes = sorted({resolve_ffn_size(f, width) for f in (WIDTHS if narrow else (1.0,))},
                   reverse=True)
    return [Shape(layers, size) for layers in range(1, depth) for size in sizes]


def stand_in(teacher: PreTrainedModel, shape: Shape) -> PreTrainedModel:
    """A model of `shape` from the teacher, cheaply (random graft, no scores, no training):
    it runs exactly as fast as a trained student of that shape."""
    narrower = shape.ffn_size < ffn_width(teacher)
    options = GraftOptions(ffn_size=shape.ffn_size, ffn_size_all=True) if narrower else None
    return graft_model(teacher, layers=shape.layers, method="random", options=options)[0]


def stand_ins(teacher: PreTrainedModel, shapes: Sequence[Shape]) -> dict[Shape, PreTrainedModel]:
    """A stand-in per shape, the shapes of one FFN width sharing one set of weights: the
    deepest is built (`stand_in`), each shallower one runs its first layers. A 12-layer
    teacher's 55 shapes then hold 5 stand-ins' weights, not 55 (about 1.5 GB for MPNet,
    not 12)."""
    deepest = {}
    for shape in shapes:
        if shape.layers > deepest.get(shape.ffn_size, Shape(0, 0)).layers:
            deepest[shape.ffn_size] = shape
    built = {width: stand_in(teacher, shape) for width, shape in deepest.items()}
    return {s: first_layers(built[s.ffn_size], s.layers) for s in shapes}


def first_layers(model: PreTrainedModel, count: int) -> PreTrainedModel:
    """`model` running only its first `count` layers, every weight shared with it (a view of
    the shape, for timing; the model itself is left as it was)."""
    if count == num_layers(model.config):
        return model
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = count
    prefix = [] if model.base_model is model else [model.base_model_prefix]
    *above, last = [*prefix, *spec_for(model).layers.split(".")]
    view = parent = _own_children(model, config)
    source = model
    for name in above:  # copy the chain of modules down to the layer list
        source = source._modules[name]
        child = _own_children(source, config)
        parent._modules[name] = child
        parent = child
    parent._modules[last] = torch.nn.ModuleList(list(source._modules[last])[:count])
    return view


def _own_children(module: torch.nn.Module, config) -> torch.nn.Module:
    """A shallow copy with a table of children of its own (the children stay shared) and,
    where it has one, the view's config."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    if hasattr(module, "config"):
        clone.config = config
    return clone


def time_shapes(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task,
                shapes: Sequence[Shape], *, backend: str, threads: int, device: torch.device,
                max_length: int = 128) -> list[dict]:
    """Every shape's throughput over the teacher's, from one interleaved `measure_speed` run:
    the teacher on torch-fp32 first (the reference), each shape's stand-in on `backend`."""
    teacher = teacher.to(device).eval()
    return time_models(teacher, tokenizer, task, stand_ins(teacher, shapes),
                       backend=backend, threads=threads, device=device, max_length=max_length)


def time_models(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task,
                models: Mapping[Shape, PreTrainedModel], *, backend: str, threads: int,
                device: torch.device, max_length: int = 128) -> list[dict]:
    """One model per shape (any weights: speed depends on the shape alone) timed in ONE
    interleaved `measure_speed` run with the teacher (torch-fp32, the reference) at batch 32
    on the task's dev lengths; one row per shape, in order."""
    lengths = task_lengths(task, tokenizer, "dev", max_length)
    teacher = teacher.to(device).eval()
    named = {"teacher": teacher, **{s.name: m.to(device).eval() for s, m in models.items()}}
    runtime = Runtime(device, "fp32")
    with tempfile.TemporaryDirectory(prefix="layergraft-speedup-") as work:
        folders = _export_stand_ins(named, tokenizer, task, backend, Path(work))
        runners = {("teacher", REFERENCE_BACKEND): TorchRunner(REFERENCE_BACKEND, teacher,
                                                              runtime)}
        for shape in models:
            runner = build_runner(backend, named[shape.name], runtime, threads,
                                  folders.get(shape.name))
            if isinstance(runner, str):
                raise LayergraftError(f"backend {backend} cannot run here: {runner}")
            runners[shape.name, backend] = runner
        rows = measure_speed(named, lengths, batch_sizes=(BATCH_SIZE,), threads=threads,
                             runners=runners)
    found = {r["model"]: r for r in rows}  # one row per model: the teacher's, each shape's
    return [{"shape": s.name, "layers": s.layers, "ffn_size": s.ffn_size,
             **({} if s.heads is None else {"heads": s.heads}),
             "throughput_ratio": round(found[s.name]["throughput_ratio"], 4),
             "throughput": round(found[s.name]["throughput"], 2),
             "teacher_throughput": round(found["teacher"]["throughput"], 2),
             "encoder_params": found[s.name]["encoder_params"]} for s in models]


def _export_stand_ins(models: Mapping[str, PreTrainedModel], tokenizer: PreTrainedTokenizerBase,
                      task: Task, backend: str, work: Path) -> dict[str, Path]:
    """Each stand-in's export folder, where an onnx backend needs one (saved, then exported
    and verified as `bench` does)."""
    if backend not in ONNX_GRAPHS:
        return {}
    paths = {}
    for name, model in models.items():
        if name != "teacher":
            paths[name] = str(save_model(model, tokenizer, work / "models" / name))
    folders = export_backends(list(paths.values()), [backend], work / "onnx", task)
    return {name: folders[path] for name, path in paths.items()}


def speed_threads(asked: int | None = None) -> int:
    """1 thread (issue 35's rule for comparable figures) unless asked, or unless the user
    set OMP_NUM_THREADS (then torch's count, which it set)."""
    if asked is not None:
        if asked < 1:
            raise LayergraftError(f"speedup_threads must be 1 or more, not {asked}")
        return asked
    return torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else 1


def cpu_name() -> str:
    """The CPU's model name (the figures hold on this CPU only)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def shape_table(teacher_path: str, source: TaskSource, shapes: Sequence[Shape], *, backend: str,
                threads: int, device: torch.device, max_length: int,
                cache_dir: str | os.PathLike | None = None,
                loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase, Task] | None = None
                ) -> dict:
    """The timing table of `shapes` (from the cache when this machine measured them before:
    one speed per shape); `loaded` is the (teacher, tokenizer, task) to time with."""
    def measure() -> list[dict]:
        teacher, tokenizer, task = loaded
        return time_shapes(teacher, tokenizer, task, shapes, backend=backend, threads=threads,
                           device=device, max_length=max_length)

    return cached_timing(teacher_path, source, [s.name for s in shapes], measure,
                         backend=backend, threads=threads, device=device,
                         max_length=max_length, cache_dir=cache_dir)


def cached_timing(teacher_path: str, source: TaskSource, names: Sequence[str], measure,
                  *, backend: str, threads: int, device: torch.device, max_length: int,
                  cache_dir: str | os.PathLike | None = None) -> dict:
    """The table of `measure()`'s shape rows, cached under <cache>/speed/ per teacher, task,
    shapes, backend, threads and CPU, so a shape measured here once keeps that one figure."""
    key = {"teacher": content_fingerprint(resolve_model(teacher_path)), "task": asdict(source),
           "data": content_fingerprint(source.name), "max_length": max_length,
           "backend": backend, "threads": threads, "device": str(device),
           "cpu": cpu_name(), "capability": cpu_capability(), "torch": torch.__version__,
           "batch_size": BATCH_SIZE, "shapes": list(names)}
    path = (cache_root(cache_dir) / "speed" / short_hash(json.dumps(key, sort_keys=True))
            / "shapes.json")
    if path.is_file():
        return {**json.loads(path.read_text()), "cached": True}
    start = time.perf_counter()
    rows = measure()
    table = {"reference": f"teacher on {REFERENCE_BACKEND}", "backend": backend,
             "threads": threads, "batch_size": BATCH_SIZE, "lengths": "dev",
             "device": str(device), "cpu": key["cpu"], "cpu_capability": key["capability"],
             "shapes": rows, "seconds": round(time.perf_counter() - start, 2)}
    write_json_atomic(path, table)
    return {**table, "cached": False}


def candidates(shapes: Sequence[Mapping], speedup: float, backend: str) -> list[dict]:
    """Each depth's widest shape that reaches `speedup`, the most encoder parameters first,
    at most MAX_PROBED; none reaching it is a one-line error naming the fastest shape."""
    best: dict[int, Mapping] = {}
    for row in shapes:
        if row["throughput_ratio"] >= speedup and row["ffn_size"] > best.get(
                row["layers"], {}).get("ffn_size", 0):
            best[row["layers"]] = row
    if not best:
        top = max(shapes, key=lambda r: r["throughput_ratio"])
        raise LayergraftError(
            f"no student shape reaches {speedup:g}x the teacher on {backend} here: the "
            f"fastest measured, {top['layers']} layer(s) at FFN width "
            f"{top['ffn_size']} ({top['shape']}), runs {top['throughput_ratio']:.2f}x")
    ranked = sorted(best.values(), key=lambda r: (-r["encoder_params"], -r["layers"]))
    return [dict(r) for r in ranked[:MAX_PROBED]]


def compress_speedup(teacher_path: str, task: str | TaskSource | None, *, speedup: float,
                     out_dir: str | os.PathLike, layers: int | None = None,
                     speedup_backend: str = REFERENCE_BACKEND, speedup_threads: int | None = None,
                     budget: Budget | str | None = None, training: TrainConfig | None = None,
                     learning_rate: float | str | None = None, plan: str | None = None,
                     probe_share: float = PROBE_SHARE, objective: str = "task",
                     **options) -> dict:
    """`compress` to the shape that runs `speedup` times the teacher on `speedup_backend` here
    (module docstring): time the shapes, probe up to three that reach it, train the best on
    the full `budget`; `options` go to every `compress` run. Returns the final run's record,
    with `choices["speedup"]`. `method="auto"` (the CLI's default) grafts here: FFN width, the
    lever that reaches a speed between two depths, is graft's."""
    backend = _check_request(speedup, speedup_backend, layers, objective, plan, options)
    if options.get("method") == "auto":
        options["method"] = "graft"
    if options.get("dry_run"):
        return {"status": "to do", "out": str(out_dir), "settings": None,
                "note": "--speedup chooses the student's shape by timing and probes when the "
                        "run starts"}
    if task is None:
        raise LayergraftError("--speedup times the shapes on the task's dev lengths: give --task")
    source = as_source(task)
    budget = get_objective(objective).default_budget if budget is None else budget
    loaded = source.load()
    teacher, tokenizer = load_for_task(teacher_path, loaded, allow_untrained_head=options.get(
        "allow_untrained_head", False))
    width = ffn_width(teacher)
    shapes = shape_grid(num_layers(teacher.config), width,
                        options.get("method", "graft") in TAKES_OPTIONS)
    max_length = (training or student_training()).max_length
    device = (torch.device("cpu") if backend in CPU_ONLY
              else Runtime.resolve(options.get("device", "auto"), "fp32").device)
    table = shape_table(teacher_path, source, shapes, backend=backend,
                        threads=speed_threads(speedup_threads), device=device,
                        max_length=max_length, cache_dir=options.get("cache_dir"),
                        loaded=(teacher, tokenizer, loaded))
    del teacher, tokenizer  # every run below loads its own
    picked = candidates(table["shapes"], speedup, backend)
    graft = options.pop("graft_options", None) or GraftOptions()
    probes = _probe(teacher_path, source, picked, budget, probe_share, training, learning_rate,
                    {**options, "objective": objective}, graft, width)
    scores = probes["dev_retention"]
    chosen = picked[best_on_dev([scores.get(p["shape"]) for p in picked])]
    record = compress_auto(teacher_path, source, layers=chosen["layers"], out_dir=out_dir,
                           learning_rate=learning_rate, plan=plan, budget=budget,
                           training=training, probe_share=probe_share, objective=objective,
                           graft_options=_shaped(graft, chosen, width), **options)
    choice = {"requested": speedup, "backend": backend,
              **{k: table[k] for k in ("reference", "threads", "batch_size", "lengths",
                                       "device", "cpu", "cpu_capability")},
              "shapes": table["shapes"], "candidates": [r["shape"] for r in picked],
              "probed": {"budget": probes["budget"], "dev_retention": scores},
              "chosen": {**chosen, "dev_retention": get_objective(objective).probe_score(record)},
              "seconds": {"timing": 0.0 if table["cached"] else table["seconds"],
                          "timing_cached": table["cached"], "probes": probes["seconds"],
                          "final": record.get("seconds")}}
    record.setdefault("choices", {})["speedup"] = choice
    write_json_atomic(Path(out_dir) / RESULTS_NAME, record)
    write_bytes_atomic(Path(out_dir) / FIGURE_NAME, png_bytes(speedup_figure(choice)))
    return record


def _check_request(speedup: float, backend: str, layers: int | None, objective: str,
                   plan: str | None, options: Mapping) -> str:
    """The checked backend; one line for anything --speedup cannot go with."""
    if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not speedup > 0:
        raise LayergraftError(f"--speedup takes a number of times the teacher's throughput "
                              f"(e.g. 4), not '{speedup}'")
    if backend not in BACKENDS:
        raise LayergraftError(f"unknown --speedup-backend '{backend}': choose one of "
                              f"{', '.join(BACKENDS)}")
    if objective != "task":
        raise LayergraftError("--speedup chooses a classifier's shape (--objective task), not "
                              f"an '{objective}' model's yet")
    graft = options.get("graft_options")
    given = [flag for flag, value in (("--layers", layers), ("--pairs", options.get("pairs")),
                                      ("--ffn-size", graft and graft.ffn_size)) if value]
    if given:
        raise LayergraftError(f"--speedup chooses the student's depth and FFN width: drop "
                              f"{', '.join(given)}")
    if plan not in (None, "uniform", "auto"):
        raise LayergraftError(f"--speedup chooses the depth, so --plan takes uniform or auto "
                              f"with it, not '{plan}'")
    return backend


def _shaped(graft: GraftOptions, shape: Mapping, width: int) -> GraftOptions:
    """The run's graft options at the shape's FFN width (full width: as they are, today's)."""
    if shape["ffn_size"] >= width:
        return graft
    return replace(graft, ffn_size=int(shape["ffn_size"]), ffn_size_all=True)


def _probe(teacher_path: str, source: TaskSource, picked: Sequence[Mapping],
           budget: Budget | str, share: float, training: TrainConfig | None,
           learning_rate: float | str | None, options: Mapping, graft: GraftOptions,
           width: int) -> dict:
    """A short run per candidate (none for a lone one), at the run's own rate (the default
    where it is auto: the final run chooses it); their dev retention, budget and cost."""
    if learning_rate not in (None, "auto"):
        training = replace(training or student_training(), learning_rate=float(learning_rate))
    result = {"budget": None, "dev_retention": {}, "seconds": 0.0}
    if len(picked) < 2:
        return result
    for shape in picked:
        override = {"graft_options": _shaped(graft, shape, width),
                    **({"training": training} if training is not None else {})}
        probe = Prober(teacher_path, source, shape["layers"], budget, share,
                        options).choose({shape["shape"]: override})
        result["dev_retention"][shape["shape"]] = probe["dev_retention"][shape["shape"]]
        result["seconds"] = round(result["seconds"] + probe["seconds"], 2)
        result["budget"] = probe["budget"]
    return result
