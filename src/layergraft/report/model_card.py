"""Model cards: the README.md of every model folder layergraft writes, from its records alone.

The card is the Hub's format: a YAML header (base model, library, pipeline tag, tags, data
set, metrics with their values) and a body that says what was done (depths, method, strategy,
where each layer's heads and neurons came from) and how the student compares with its teacher
(metric, retention, agreement, speed) and how to load it. Every number is read from the graft
manifest and the run's results record; the card is written again whenever they are, and is
never edited by hand.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import yaml

from layergraft.utils import write_bytes_atomic

CARD_NAME = "README.md"


def card_text(manifest: Mapping, results: Mapping | None = None) -> str:
    """The card of a model from its manifest (`Manifest.to_dict()`) and results record."""
    teacher = manifest["teacher"]
    header = {"base_model": teacher.get("name_or_path") or None, "library_name": "transformers",
              "pipeline_tag": "text-classification",
              "tags": ["layergraft", "layer-grafting", str(teacher["model_type"])]}
    body = [f"# A {manifest['depths'][-1]}-layer student of a {teacher['num_layers']}-layer "
            f"{teacher['model_type']} teacher, made by layergraft",
            _what_was_done(manifest, results), provenance_table(manifest)]
    if results:
        header["datasets"] = [results["task"]]
        header["model-index"] = [{"name": Path(str(results.get("out", "student"))).name,
                                  "results": [{"task": {"type": "text-classification"},
                                               "dataset": {"name": results["task"]},
                                               "metrics": _metrics(results)}]}]
        body.append(_evaluation(results))
    body.append("## How to load it\n\n```python\nfrom transformers import "
                "AutoModelForSequenceClassification, AutoTokenizer\n\nmodel = "
                "AutoModelForSequenceClassification.from_pretrained(PATH)\ntokenizer = "
                "AutoTokenizer.from_pretrained(PATH)\n```\n\nA stock model of standard shape: "
                "`graft_manifest.json` records where every head and neuron came from.")
    return compose(header, body)


def compose(header: Mapping, body: list[str]) -> str:
    """A card's text: the YAML header between --- lines, then the body's sections."""
    front = yaml.safe_dump(dict(header), sort_keys=False)
    return f"---\n{front}---\n\n" + "\n\n".join(body) + "\n"


def write_card(folder: str | os.PathLike, manifest: Mapping,
               results: Mapping | None = None) -> Path:
    return write_bytes_atomic(Path(folder) / CARD_NAME, card_text(manifest, results).encode())


def read_card_header(folder: str | os.PathLike) -> dict:
    """The YAML header of a card (what the Hub reads)."""
    text = (Path(folder) / CARD_NAME).read_text()
    return yaml.safe_load(text.split("---\n")[1])


def _metrics(results: Mapping) -> list[dict]:
    return [{"type": name, "name": f"{split} {name}", "value": round(float(value), 6)}
            for split in ("dev", "test") if split in results
            for name, value in results[split]["metrics"].items()]


def _what_was_done(manifest: Mapping, results: Mapping | None) -> str:
    steps = ", ".join(f"{s['method']} ({s['input_layers']} -> {len(s['recipes'])} layers)"
                      for s in manifest["steps"])
    lines = ["## What was done", "", f"- depths: {' -> '.join(map(str, manifest['depths']))}",
             f"- surgery: {steps or 'none'}"]
    lines += [_choice_line(s["choice"]) for s in manifest["steps"] if s.get("choice")]
    if results:
        lines += [f"- strategy: {results['strategy']}, budget {results['train']['budget']} "
                  f"({results['train']['steps']} optimizer steps), seed {results['seed']}",
                  f"- parameters: {results['student']['parameters']:,} "
                  f"(teacher {results['teacher']['parameters']:,})"]
    return "\n".join(lines)


def _choice_line(choice: Mapping) -> str:
    """Which graft options each span got by reconstruction (the manifest lists every
    candidate's error)."""
    def said(span: Mapping) -> str:
        chosen = span["chosen"]
        chosen_sources = f"top {chosen['max_sources']}" if chosen["max_sources"] else "all"
        return (f"layers {span['span'][0]}-{span['span'][-1]}: {chosen_sources} sources, "
                f"{chosen['bias']} bias, {chosen['norm']} norm (span error "
                f"{span['error']:.3g}, lowest of {len(span['candidates'])})")

    return (f"- graft options chosen per span by reconstruction on {choice['texts']} "
            f"training texts: {'; '.join(said(span) for span in choice['spans'])}")


def provenance_table(manifest: Mapping) -> str:
    """Markdown: which teacher layers, heads and neurons each student layer came from."""
    rows = ["## Where each layer came from", "",
            "| layer | teacher layers | heads from | neurons from |", "|---|---|---|---|"]
    for index, layer in enumerate(manifest["layers"]):
        rows.append(f"| {index} | {', '.join(map(str, layer['sources']))} | "
                    f"{_counts(layer['heads'])} | {_counts(layer['neurons'])} |")
    return "\n".join(rows)


def _counts(units) -> str:
    if units is None:
        return "weight average"
    counts = Counter(int(source) for source, _ in units)
    return ", ".join(f"{n} of layer {layer}" for layer, n in sorted(counts.items()))


def _evaluation(results: Mapping) -> str:
    metric = results["primary_metric"]
    rows = ["## Evaluation against the teacher", "",
            f"| split | examples | {metric} | teacher | retention | agreement |",
            "|---|---|---|---|---|---|"]
    for split, entry in results.items():
        if isinstance(entry, Mapping) and "retention" in entry and metric in entry["metrics"]:
            rows.append(f"| {split} | {entry['examples']} | {entry['metrics'][metric]:.4f} | "
                        f"{entry['teacher'][metric]:.4f} | {entry['retention'][metric]:.4f} | "
                        f"{entry['agreement']:.4f} |")
    speed = results.get("speed") or {}
    ratios = speed.get("throughput_ratio") or {}
    if ratios:
        rows += ["", "Throughput vs the teacher, measured in one run: " + ", ".join(
            f"{ratio:.2f}x at batch {batch}" for batch, ratio in ratios.items()) + "."]
    return "\n".join(rows)
