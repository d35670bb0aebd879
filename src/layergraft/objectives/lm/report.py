"""The `lm` objective's rows, report, one-line headline and model card, from run records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from layergraft.utils import write_bytes_atomic, write_json_atomic

COLUMNS = ("run", "method", "strategy", "layers", "test_ppl", "teacher_test_ppl",
           "ppl_ratio", "ood_ppl", "kl", "agreement", "prefill_ratio", "decode_ratio")


def record_row(record: Mapping, name: str) -> dict:
    test = record["test"]
    ood = next(iter(record.get("ood", {}).values()), None)
    speed = record.get("speed") or {}
    return {"run": name, "method": record["method"], "strategy": record["strategy"],
            "layers": record["layers"], "test_ppl": test["student_perplexity"],
            "teacher_test_ppl": test["teacher_perplexity"],
            "ppl_ratio": test["perplexity_ratio"],
            "ood_ppl": ood["student_perplexity"] if ood else None,
            "kl": test["kl"], "agreement": test["agreement"],
            "prefill_ratio": speed.get("prefill_ratio"), "decode_ratio": speed.get("decode_ratio"),
            "window": test["window"], "windows": test["windows"]}


def teacher_row(record: Mapping) -> dict:
    test = record["test"]
    ood = next(iter(record.get("ood", {}).values()), None)
    return {"run": "teacher", "method": "teacher", "strategy": "-",
            "layers": record["teacher_layers"], "test_ppl": test["teacher_perplexity"],
            "teacher_test_ppl": test["teacher_perplexity"], "ppl_ratio": 1.0,
            "ood_ppl": ood["teacher_perplexity"] if ood else None, "kl": 0.0, "agreement": 1.0,
            "prefill_ratio": 1.0, "decode_ratio": 1.0, "window": test["window"],
            "windows": test["windows"]}


def markdown(rows: Sequence[Mapping]) -> str:
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    protocol = (f"\n\nPerplexity in non-overlapping windows of {rows[0]['window']} tokens "
                f"({rows[0]['windows']} windows of the held-out test text)." if rows else "")
    return "\n".join(lines) + protocol


def write_rows(rows: Sequence[Mapping], out: Path, title: str) -> None:
    """results.json (the rows) and report.md (the table), atomically."""
    write_json_atomic(Path(out) / "results.json", list(rows))
    write_bytes_atomic(Path(out) / "report.md", f"# {title}\n\n{markdown(rows)}\n".encode())


def headline(record: Mapping) -> str:
    test = record["test"]
    line = (f"{record['teacher_layers']} -> {record['layers']} layers ({record['method']}, "
            f"{record['strategy']}): test perplexity {test['student_perplexity']:.2f} "
            f"(teacher {test['teacher_perplexity']:.2f}, window {test['window']}), "
            f"top-1 agreement {test['agreement']:.3f}")
    speed = record.get("speed")
    if speed:
        line += (f", prefill {speed['prefill_ratio']:.2f}x, decode {speed['decode_ratio']:.2f}x "
                 f"(ideal {speed['ideal_ratio']:.2f}x)")
    return line


def card_text(record: Mapping) -> str:
    """README.md of a student: what was done, perplexity side by side, speed, continuations."""
    rows = [teacher_row(record), record_row(record, "student")]
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [layergraft]", "---", "",
             f"# {record['layers']}-layer student of {record['teacher']}", "",
             f"Made by layergraft: {headline(record)}.", "",
             f"Text: {record['text']['text']} (blocks of {record['text']['block_length']} "
             "tokens for training).", "", markdown(rows), "",
             "Load it with `AutoModelForCausalLM.from_pretrained(folder)`.", "",
             "## Greedy continuations (teacher / student)", ""]
    for item in record.get("continuations", []):
        lines += [f"- **{item['prompt']}**", f"  - teacher: {item['teacher']!r}",
                  f"  - student: {item['student']!r}"]
    if record.get("harness"):
        lines += ["", "## lm-eval zero-shot", ""]
        lines += [f"- {name}: acc {h['acc']:.3f} on {h['task']} ({h['examples']} examples)"
                  for name, h in record["harness"].items()]
    return "\n".join(lines) + "\n"


def write_card(folder: Path, record: Mapping) -> None:
    write_bytes_atomic(Path(folder) / "README.md", card_text(record).encode())
