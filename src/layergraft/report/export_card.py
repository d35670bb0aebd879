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
from pathlib import Path

from layergraft.report.model_card import CARD_NAME, compose, provenance_table
from layergraft.utils import write_bytes_atomic


def export_card_text(report: Mapping, manifest: Mapping | None = None) -> str:
    """The card of an export folder from its report (and the source's graft manifest)."""
    base = (manifest or {}).get("teacher", {}).get("name_or_path") or report["source"]
    tags = ["layergraft", "onnx", "onnxruntime", str(report["model_type"])]
    header: dict = {"base_model": str(base), "library_name": "onnx",
                    "pipeline_tag": "text-classification",
                    "tags": tags + (["int8"] if "int8" in report else [])}
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


def metrics(report: Mapping) -> list[dict]:
    """The header's metrics: the fp32 check, and int8's scores and agreement."""
    fp32 = report["fp32"]
    rows = [{"type": "max_abs_diff", "name": "fp32 ONNX vs PyTorch, max abs logit difference",
             "value": float(fp32["max_abs_diff"])}]
    int8 = report.get("int8")
    if int8 and int8.get("checked"):
        rows += [{"type": int8["metric"], "name": f"{int8['data']} {int8['metric']} ({name})",
                  "value": round(float(int8[name]), 6)} for name in ("fp32", "int8")]
    if int8:
        rows.append({"type": "agreement", "name": "int8 vs fp32 prediction agreement",
                     "value": round(float(int8["agreement"]), 6)})
    return rows


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
    return "\n".join(lines)


def _verification(report: Mapping) -> str:
    fp32 = report["fp32"]
    lines = ["## Verification against PyTorch", "",
             f"- fp32: max abs logit difference {fp32['max_abs_diff']:.2e} on {fp32['data']} "
             f"({fp32['rows']} rows; tolerance {fp32['tolerance']:.0e}): "
             f"{'passed' if fp32['passed'] else 'FAILED'}"]
    int8 = report.get("int8")
    if int8:
        scores = (f"{int8['metric']} {100 * int8['int8']:.2f} vs fp32 {100 * int8['fp32']:.2f}, "
                  if int8.get("checked") else "")
        verdict = {True: ": passed", False: ": FAILED"}.get(int8.get("passed"), "")
        lines.append(f"- int8 vs fp32 on {int8['data']}: {scores}agreement "
                     f"{100 * int8['agreement']:.1f}%, max abs logit difference "
                     f"{int8['max_abs_diff']:.2e}{verdict}")
    return "\n".join(lines)


def _how_to_load(report: Mapping) -> str:
    graph = "model.int8.onnx" if "int8" in report else "model.onnx"
    feed = ", ".join(f'"{name}": encoded["{name}"]' for name in report["inputs"])
    return ("## How to load it\n\n```python\nimport onnxruntime as ort\nfrom transformers import "
            f"AutoTokenizer\n\ntokenizer = AutoTokenizer.from_pretrained(PATH)\nsession = "
            f'ort.InferenceSession(f"{{PATH}}/{graph}")\nencoded = tokenizer(["a sentence"], '
            f'return_tensors="np")\nlogits = session.run(["logits"], {{{feed}}})[0]\n```\n\n'
            "No PyTorch needed: only onnxruntime and the tokenizer in this folder.")
