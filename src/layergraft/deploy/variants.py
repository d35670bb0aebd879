"""The graphs an export folder holds, by one naming scheme, and their checks.

A graph is `[opt-]PRECISION`: `opt-` is the graph fused by ONNX Runtime's transformer
optimizer (`export --optimize`, `layergraft.deploy.optimize`), PRECISION is fp32, int8
(dynamic: int8 weights, activations quantised at run time) or int8-static (QDQ: int8 weights
and activations, activation ranges calibrated on task texts). Its file is
model[.opt][.int8|.int8-static].onnx, its entry in export_report.json has its name, and bench
runs it as backend `onnx-` + name (onnx-fp32, onnx-opt-int8, onnx-int8-static, ...).
Every fp32 graph must reproduce PyTorch (`verify.fp32_check`); every int8 graph is scored
against the fp32 graph it was made from (`verify.int8_check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layergraft.deploy import onnx as graph
from layergraft.deploy import verify
from layergraft.errors import LayergraftError

PRECISIONS = ("fp32", "int8", "int8-static")
QUANTIZE = PRECISIONS[1:]
CALIBRATION_ROWS = 256  # training texts that calibrate static int8 (seeded sample)


@dataclass(frozen=True)
class Graph:
    """One graph of an export folder: fused or not, in one precision."""

    fused: bool
    precision: str

    @property
    def name(self) -> str:
        return f"opt-{self.precision}" if self.fused else self.precision

    @property
    def file(self) -> str:
        stem = "model.opt" if self.fused else "model"
        return f"{stem}.onnx" if self.precision == "fp32" else f"{stem}.{self.precision}.onnx"

    @property
    def backend(self) -> str:
        return f"onnx-{self.name}"

    @property
    def source(self) -> Graph:
        """The fp32 graph this one is made from (itself when fp32)."""
        return Graph(self.fused, "fp32")

    def how(self) -> str:
        """The export flags that write this graph."""
        flags = ["--optimize"] if self.fused else []
        return " ".join(flags + ([f"--quantize {self.precision}"]
                                 if self.precision != "fp32" else [])) or "plain export"


# model.onnx and model.int8.onnx first: the files (and report entries) of a plain export
GRAPHS = tuple(Graph(fused, precision) for fused in (False, True) for precision in PRECISIONS)


def parse_quantize(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """--quantize as a tuple: None, "int8", "int8-static", "int8,int8-static" or a list."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in QUANTIZE]
    if unknown or not names:
        raise LayergraftError(f"--quantize must be one of {', '.join(QUANTIZE)} (or both, "
                              f"comma-separated), not '{unknown[0] if unknown else value}'")
    return tuple(dict.fromkeys(names))


def chosen(quantize: Sequence[str], optimize: bool) -> list[Graph]:
    """The graphs an export writes: fp32 and each quantisation, plain and (optimized) fused."""
    return [g for g in GRAPHS if (g.precision == "fp32" or g.precision in quantize)
            and (optimize or not g.fused)]


def write_graphs(model, tokenizer, names: Sequence[str], folder: Path,
                 quantize: Sequence[str], optimize: bool, calibration=None) -> dict:
    """Beside model.onnx in `folder`: the fused graph (with `optimize`) and every int8
    graph of `quantize` from each fp32 graph. Returns the report's record of how: the
    optimizer's fusions, static int8's calibration (`calibration`: a task, else the built-in
    sentences)."""
    from layergraft.deploy.optimize import STATIC_OPS, optimize_onnx, quantize_static_int8

    made = {}
    if optimize:
        made["optimizer"] = optimize_onnx(model, tokenizer, folder / Graph(True, "fp32").file,
                                          names)
    batches = []
    if "int8-static" in quantize:
        batches = calibration_batches(tokenizer, names, calibration)
        made["static_int8"] = {
            "format": "QDQ", "ops": list(STATIC_OPS), "per_channel": graph.PER_CHANNEL,
            "calibration": f"{calibration.spec.name} train" if calibration is not None
            else "built-in sentences", "rows": sum(len(b["input_ids"]) for b in batches)}
    for g in chosen(quantize, optimize):
        source, target = folder / g.source.file, folder / g.file
        if g.precision == "int8":
            graph.quantize_int8(source, target)
        elif g.precision == "int8-static":
            quantize_static_int8(source, target, batches)
    return made


def check_graphs(folder: Path, reference: np.ndarray, batches: list[dict], data: str,
                 task=None, labels: np.ndarray | None = None) -> dict:
    """The report entry of every graph in `folder`, by name: fp32 graphs against PyTorch's
    `reference` logits, int8 graphs against their fp32 graph."""
    logits, report = {}, {}
    for g in GRAPHS:
        if not (folder / g.file).exists():
            continue
        logits[g] = verify.onnx_logits(graph.session(folder / g.file), batches)
        if g.precision == "fp32":
            report[g.name] = verify.fp32_check(reference, logits[g], data)
        else:
            report[g.name] = {"data": data, "per_channel": graph.PER_CHANNEL,
                              **verify.int8_check(logits[g.source], logits[g], task, labels)}
    return report


def failure(name: str, record: dict) -> str:
    """Why one graph's check failed, in a few words."""
    if name.endswith("fp32"):
        return (f"{name}: max abs logit difference {record['max_abs_diff']:.2e} > "
                f"{record['tolerance']:.0e}")
    return (f"{name}: {record['metric']} {100 * record['int8']:.2f} vs fp32 "
            f"{100 * record['fp32']:.2f}, agreement {100 * record['agreement']:.1f}%")


def listing(folder: Path) -> list[dict]:
    """The report's record of the graphs in `folder` (what the model card reads)."""
    return [{"name": g.name, "file": g.file, "precision": g.precision, "fused": g.fused,
             "source": g.source.name} for g in GRAPHS if (folder / g.file).exists()]


def sizes(folder: Path) -> dict:
    """Bytes of every graph file, and each int8 graph's size over its fp32 graph's."""
    files = {g.file: (folder / g.file).stat().st_size for g in GRAPHS if (folder / g.file).exists()}
    for g in GRAPHS:
        if g.precision != "fp32" and g.file in files:
            files[f"{g.name}_size_ratio"] = files[g.file] / files[g.source.file]
    return files


def calibration_batches(tokenizer, names: Sequence[str], task=None,
                        rows: int = CALIBRATION_ROWS) -> list[dict]:
    """What static int8 calibrates on: a seeded sample of `rows` training texts of `task`
    (batched shortest first), else the built-in sentences."""
    if task is None:
        return verify.sentence_batches(tokenizer, names)
    from layergraft.data.encoding import EXAMPLE_ID, LABELS, by_length, encode, loader

    train = encode(task, tokenizer, splits=["train"])["train"]
    if not len(train):
        raise LayergraftError(f"task {task.spec.name} has no training texts to calibrate static "
                              "int8 on")
    sample = train.shuffle(seed=0).select(range(min(rows, len(train))))
    data = by_length(sample).remove_columns([c for c in (EXAMPLE_ID, LABELS)
                                             if c in sample.column_names])
    return [{name: batch[name] for name in names}
            for batch in loader(data, tokenizer, verify.BATCH_SIZE)]
