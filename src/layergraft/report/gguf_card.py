"""The model card (README.md) of a GGUF export folder, from its export_report.json.

Someone who finds only `model.gguf` should learn what it holds (architecture, precision,
hyper-parameters, tokenizer), how exactly it was checked (the round trip through transformers'
GGUF loader, the precision's cost against the fp32 student), where the layers came from when
the source was a graft student, and how to run it in llama.cpp, ollama or transformers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from layergraft.report.model_card import CARD_NAME, compose, provenance_table
from layergraft.utils import write_bytes_atomic


def gguf_card_text(report: Mapping, manifest: Mapping | None = None) -> str:
    """The card of a GGUF export from its report (and the source's graft manifest)."""
    base = (manifest or {}).get("teacher", {}).get("name_or_path") or report["source"]
    header = {"base_model": str(base), "library_name": "gguf", "pipeline_tag": "text-generation",
              "tags": ["layergraft", "gguf", "llama.cpp", str(report["model_type"]),
                       str(report["gguf_type"])],
              "model-index": [{"name": Path(str(report["source"])).name + "-gguf",
                               "results": [{"task": {"type": "text-generation"},
                                            "dataset": {"name": report["round_trip"]["data"]},
                                            "metrics": _metrics(report)}]}]}
    body = [f"# {report['source']} as GGUF ({report['layers']}-layer {report['model_type']}, "
            f"{report['gguf_type']}), exported by layergraft", _exported(report),
            "## Verification\n\n" + "\n".join(f"- {line}" for line in summary_lines(report))]
    if manifest:
        body.append(provenance_table(manifest))
    body.append(_how_to_load())
    return compose(header, body)


def write_gguf_card(folder: str | os.PathLike, report: Mapping,
                    manifest: Mapping | None = None) -> Path:
    return write_bytes_atomic(Path(folder) / CARD_NAME,
                              gguf_card_text(report, manifest).encode())


def summary_lines(report: Mapping) -> list[str]:
    """What `layergraft export --format gguf` says: each check and its verdict."""
    trip, precision = report["round_trip"], report["precision"]
    tokens = report["tokenizer_check"]
    return [f"round trip (transformers' GGUF loader vs {trip['reference']}) on {trip['data']}: "
            f"max abs logit difference {trip['max_abs_diff']:.2e} (tolerance "
            f"{trip['tolerance']:.0e}): {_verdict(trip)}",
            f"{report['gguf_type']} vs {precision['reference']}: max abs logit difference "
            f"{precision['max_abs_diff']:.2e}, {precision['relative']:.1e} of the max |logit| "
            f"{precision['max_abs_logit']:.1f} (tolerance {precision['tolerance']:.0e}), "
            f"top-1 agreement {100 * precision['top1_agreement']:.1f}%: {_verdict(precision)}",
            f"tokenizer: {tokens['same_ids']}/{tokens['texts']} texts give the same ids: "
            f"{_verdict(tokens)}"]


def _verdict(record: Mapping) -> str:
    return "passed" if record["passed"] else "FAILED"


def _metrics(report: Mapping) -> list[dict]:
    return [{"type": "max_abs_diff", "value": float(report["round_trip"]["max_abs_diff"]),
             "name": "GGUF round trip, max abs logit difference"},
            {"type": "max_abs_diff", "value": float(report["precision"]["max_abs_diff"]),
             "name": f"{report['gguf_type']} vs fp32 student, max abs logit difference"},
            {"type": "agreement", "value": round(float(report["precision"]["top1_agreement"]), 6),
             "name": f"{report['gguf_type']} vs fp32 student, top-1 next-token agreement"}]


def _exported(report: Mapping) -> str:
    values = report["hyper_parameters"]
    tokenizer = report["tokenizer"]
    tensors = ", ".join(f"{count} {kind}" for kind, count in report["tensors"].items())
    return "\n".join([
        "## What was exported", "", f"- source: `{report['source']}`",
        f"- exporter: {report['exporter']}; `model.gguf`: "
        f"{report['files']['model.gguf'] / 1e6:.2f} MB; tensors: {tensors}",
        f"- Q/K rows permuted for llama.cpp's rope: {'yes' if report['permuted_qk'] else 'no'}"
        f"; tied embeddings (no output tensor): {'yes' if report['tied_embeddings'] else 'no'}",
        "- " + ", ".join(f"{key} {value}" for key, value in values.items()),
        f"- tokenizer: {tokenizer['model']} byte-level BPE, pre-tokenizer '{tokenizer['pre']}', "
        f"{tokenizer['tokens']} tokens padded to {tokenizer['padded_to']}, "
        f"{tokenizer['merges']} merges"])


def _how_to_load() -> str:
    return ("## How to load it\n\n```sh\nllama-cli -m PATH/model.gguf -p \"Hello\"\n"
            "# ollama: a Modelfile with the line FROM ./model.gguf, then `ollama create`\n```"
            "\n\n```python\nimport torch\nfrom transformers import AutoModelForCausalLM, "
            "AutoTokenizer\n\nmodel = AutoModelForCausalLM.from_pretrained(PATH, "
            "gguf_file=\"model.gguf\", dtype=torch.float32)\ntokenizer = "
            "AutoTokenizer.from_pretrained(PATH, gguf_file=\"model.gguf\")\n```")
