"""`layergraft evaluate MODEL --objective lm`: one saved causal LM's perplexity on held-out
text windows, one record per split (dev, test and, asked for with `--split ood`, each
out-of-domain text), each saying its window protocol, since perplexities are only comparable
at the same window size. With a teacher the records also hold its perplexity, KL and
agreement on the same positions (`layergraft.scoring.lm_quality.lm_fidelity`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def evaluate_lm(objective, model: str, *, texts, splits: Sequence[str] | None,
                teacher: str | None, ood: Sequence[str], eval_windows: int | None,
                device: str, precision: str) -> list[dict]:
    """Records of `model` (and `teacher`, if given) on `texts`' dev and test windows, plus
    `ood` texts when `splits` names 'ood'; `objective.load` loads each model."""
    from transformers import AutoTokenizer

    from layergraft.errors import LayergraftError
    from layergraft.objectives.lm.texts import RunText
    from layergraft.runtime import Runtime
    from layergraft.scoring.lm_quality import lm_fidelity, perplexity

    wanted = list(splits or ("dev", "test"))
    unknown = [s for s in wanted if s not in ("dev", "test", "ood")]
    if unknown:
        raise LayergraftError(f"--objective lm scores the splits dev, test and ood, not "
                              f"{', '.join(unknown)}")
    runtime = Runtime.resolve(device, precision)
    student = objective.load(model, str(runtime.device)).eval()
    reference = objective.load(teacher, str(runtime.device)).eval() if teacher else None
    settings = {"texts": {"source": str(texts)}, "block_length": 2, "calibration_windows": 0,
                "ood": list(ood) if "ood" in wanted else [], "eval_windows": eval_windows}
    text = RunText.load(settings, AutoTokenizer.from_pretrained(str(model)), student.config)
    names = [s for s in wanted if s != "ood"] + settings["ood"]
    records = []
    for name in names:
        windows = text.windows[name]
        scored = (lm_fidelity(reference, student, windows) if reference is not None else
                  {**(found := perplexity(student, windows)),
                   "student_perplexity": found["perplexity"]})
        records.append({"model": str(model), "teacher": teacher, "split": name,
                        "text": text.name if name in ("dev", "test") else name, **scored})
    return records


def format_lines(records: Sequence[Mapping]) -> str:
    """One line per split: perplexity, the window protocol, and the teacher's beside it."""
    lines = []
    for r in records:
        line = (f"{r['split']} ({r['text']}): perplexity {r['student_perplexity']:.2f} on "
                f"{r['windows']} windows of {r['window']} tokens ({r['tokens']} scored)")
        if r.get("teacher_perplexity") is not None:
            line += (f"; teacher {r['teacher_perplexity']:.2f}, KL {r['kl']:.4f}, "
                     f"agreement {100 * r['agreement']:.1f}%")
        lines.append(line)
    return "\n".join(lines)
