"""The model card (README.md) of an export folder, from export_report.json and the manifest.

Someone who finds only the folder should learn what it holds (source, graphs and their
sizes, the int8 settings), how far it was checked against PyTorch (the fp32 logit difference,
int8's metric against fp32 and their agreement), where the layers came from when the source
was a graft student, and how to serve it with plain ONNX Runtime. Every number is read from
the report, so the card says exactly what the checks measured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from layergraft.report.model_card import CARD_NAME, compose, provenance_table
from layergraft.utils import write_bytes_atomic


def export_card_text(report: Mapping, manifest: Mapping | None = None) -> str:
    """The card of an export folder from its report (and the source's graft manifest)."""
    base = (manifest or {}).get("teacher", {}).get("name_or_path") or report["source"]
    tags = ["layergraft", "onnx", "onnxruntime", str(report["model_type"])]
    header: dict = {"base_model": str(base), "library_name": "onnx",
                    "pipeline_tag": "text-classification",
                    "tags": tags + (["int8"] if _int8(report) else [])
                    + (["optimized"] if "optimizer" in report else [])}
    if report.get("task"):
        header["datasets"] = [report["task"]]
    header["model-index"] = [{"name": Path(str(report["source"])).name + "-onnx",
                              "results": [{"task": {"type": "text-classification"},
                                           "dataset": {"name": report["fp32"]["data"]},
                                           "metrics": metrics(report)}]}]
    body = [f"# {report['source']} as ONNX ({report['layers']}-layer {report['model_type']}), "
            "exported by layergraft", _exported(report), _verification(report)]
    if manifest:
        body.append(provenance_table(manifest))
    body.append(_how_to_load(report))
    return compose(header, body)


def write_export_card(folder: str | os.PathLike, report: Mapping,
                      manifest: Mapping | None = None) -> Path:
    return write_bytes_atomic(Path(folder) / CARD_NAME,
                              export_card_text(report, manifest).encode())


def summary_lines(report: Mapping) -> list[str]:
    """What `layergraft export` says: each graph's check, and what the optimizer fused."""
    lines = []
    for g in _graphs(report):
        record = report[g.name]
        if g.precision == "fp32":
            lines.append(f"{g.name} ONNX vs PyTorch on {record['data']} ({record['rows']} rows): "
                         f"max abs logit difference {record['max_abs_diff']:.2e}")
            continue
        ratio = report["files"][f"{g.name}_size_ratio"]
        lines.append(f"{g.name}: {_scores(record)}agreement {100 * record['agreement']:.1f}%, "
                     f"{100 * ratio:.0f}% of the {g.source} file")
    if "optimizer" in report:
        lines.append(f"optimizer: {_fusions(report['optimizer'])}")
    return lines


def metrics(report: Mapping) -> list[dict]:
    """The header's metrics: each fp32 graph's check, and each int8 graph's scores (and its
    fp32 graph's) and agreement."""
    rows, scored = [], set()
    for g in _graphs(report):
        record = report[g.name]
        if g.precision == "fp32":
            rows.append({"type": "max_abs_diff", "value": float(record["max_abs_diff"]),
                         "name": f"{g.name} ONNX vs PyTorch, max abs logit difference"})
            continue
        if record.get("checked"):
            for name, key in ((g.source, "fp32"), (g.name, "int8")):
                if name not in scored:
                    scored.add(name)
                    rows.append({"type": record["metric"], "value": round(float(record[key]), 6),
                                 "name": f"{record['data']} {record['metric']} ({name})"})
        rows.append({"type": "agreement", "value": round(float(record["agreement"]), 6),
                     "name": f"{g.name} vs {g.source} prediction agreement"})
    return rows


@dataclass(frozen=True)
class _Graph:
    """One entry of the report's `graphs` (`layergraft.deploy.variants.listing`): its name,
    precision and the name of the fp32 graph it was made from."""

    name: str
    precision: str
    source: str


def _graphs(report: Mapping) -> list[_Graph]:
    """The graphs the report checked; a report from before `graphs` holds fp32 and int8."""
    entries = report.get("graphs") or [{"name": name, "precision": name, "source": "fp32"}
                                       for name in ("fp32", "int8") if name in report]
    return [_Graph(str(e["name"]), str(e["precision"]), str(e["source"])) for e in entries
            if e["name"] in report]


def _int8(report: Mapping) -> bool:
    return any(g.precision != "fp32" for g in _graphs(report))


def _scores(record: Mapping) -> str:
    return (f"{record['metric']} {100 * record['int8']:.2f} vs fp32 {100 * record['fp32']:.2f}, "
            if record.get("checked") else "")


def _fusions(optimizer: Mapping) -> str:
    fused = ", ".join(f"{op} x{n}" for op, n in optimizer["fusions"].items()) or "nothing"
    note = f" ({optimizer['note']})" if optimizer.get("note") else ""
    return (f"ONNX Runtime's transformer optimizer ('{optimizer['model_type']}' rules) fused "
            f"{fused}{note}")


def _exported(report: Mapping) -> str:
    files = report["files"]
    lines = ["## What was exported", "", f"- source: `{report['source']}`",
             f"- exporter: {report['exporter']}",
             f"- inputs: {', '.join(report['inputs'])} (int64, batch x sequence); output: "
             f"{', '.join(report['outputs'])} (float32, batch x labels)"]
    lines += [f"- `{name}`: {size / 1e6:.2f} MB" for name, size in files.items()
              if name.endswith(".onnx")]
    if "int8" in report:
        lines.append(f"- int8: ONNX Runtime dynamic quantisation, QInt8 weights "
                     f"{'per channel' if report['int8']['per_channel'] else 'per tensor'}, "
                     f"activations quantised at run time; "
                     f"{100 * files['int8_size_ratio']:.0f}% of the fp32 file")
    static = report.get("static_int8")
    if static:
        lines.append(f"- int8-static: ONNX Runtime static quantisation ({static['format']}), "
                     f"int8 weights and activations of the {', '.join(static['ops'])} ops, "
                     f"ranges calibrated on {static['rows']} rows of {static['calibration']}")
    if "optimizer" in report:
        lines.append(f"- opt graphs: {_fusions(report['optimizer'])}")
    return "\n".join(lines)


def _verification(report: Mapping) -> str:
    lines = ["## Verification against PyTorch", ""]
    for g in _graphs(report):
        record = report[g.name]
        if g.precision == "fp32":
            lines.append(f"- {g.name}: max abs logit difference {record['max_abs_diff']:.2e} on "
                         f"{record['data']} ({record['rows']} rows; tolerance "
                         f"{record['tolerance']:.0e}): "
                         f"{'passed' if record['passed'] else 'FAILED'}")
            continue
        verdict = {True: ": passed", False: ": FAILED"}.get(record.get("passed"), "")
        lines.append(f"- {g.name} vs {g.source} on {record['data']}: {_scores(record)}"
                     f"agreement {100 * record['agreement']:.1f}%, max abs logit difference "
                     f"{record['max_abs_diff']:.2e}{verdict}")
    return "\n".join(lines)


def _how_to_load(report: Mapping) -> str:
    graph = "model.int8.onnx" if "int8" in report else "model.onnx"
    feed = ", ".join(f'"{name}": encoded["{name}"]' for name in report["inputs"])
    return ("## How to load it\n\n```python\nimport onnxruntime as ort\nfrom transformers import "
            f"AutoTokenizer\n\ntokenizer = AutoTokenizer.from_pretrained(PATH)\nsession = "
            f'ort.InferenceSession(f"{{PATH}}/{graph}")\nencoded = tokenizer(["a sentence"], '
            f'return_tensors="np")\nlogits = session.run(["logits"], {{{feed}}})[0]\n```\n\n'
            "No PyTorch needed: only onnxruntime and the tokenizer in this folder.")
