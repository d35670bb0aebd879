"""How a compressed student compares with its teacher: metrics, retention, agreement, speed.

Every evaluation set (dev and test of the task, then its out-of-domain sets, named by their
task) is scored for the student and, from the shared teacher cache, for the teacher on the
same rows. The per-example outputs of both and the labels are saved beside the record, so
paired tests can be run later from the files alone. Speed is measured with teacher and
student in the same run.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from layergraft.data.encoding import LABELS, encode
from layergraft.data.metrics import compute_metrics
from layergraft.objectives.task.evaluation import agreement, predict
from layergraft.training.distill import TeacherCache
from layergraft.utils import write_bytes_atomic

EVAL_SPLITS = ("dev", "test")


def evaluation_sets(task, encoded, tokenizer, max_length: int, ood: bool = True) -> dict:
    """Labelled dev and test, then the task's out-of-domain sets (named by their task)."""
    sets = {split: encoded[split] for split in EVAL_SPLITS
            if split in encoded and LABELS in encoded[split].column_names}
    for name, other in (task.ood() if ood else {}).items():
        sets[name] = encode(other, tokenizer, max_length, splits=["test"])["test"]
    return sets


def teacher_predictions(teacher, sets: dict, tokenizer, cache_dir: Path) -> dict[str, np.ndarray]:
    """The teacher's outputs on the evaluation sets, from the shared cache."""
    return {split: TeacherCache.build(teacher, data, tokenizer,
                                      cache_dir=cache_dir).ordered_logits().numpy()
            for split, data in sets.items()}


def score_student(student, sets: dict, teacher_preds: dict[str, np.ndarray], tokenizer, spec,
                  predictions_path: Path, *, batch_size: int, precision: str,
                  progress: bool) -> dict:
    """Metrics, retention and agreement vs the teacher on every evaluation set; saves
    the student's and teacher's per-example outputs and the labels."""
    out, arrays = {}, {}
    for split, teacher in teacher_preds.items():
        data = sets[split]
        preds = predict(student, data, tokenizer, batch_size, progress=progress,
                        precision=precision)
        labels = np.asarray(data[LABELS])
        ours, theirs = (compute_metrics(spec.metrics, p, labels,
                                        regression=spec.is_regression)
                        for p in (preds, teacher))
        out[split] = {"examples": len(data), "metrics": ours, "teacher": theirs,
                      "retention": {k: ours[k] / theirs[k] if theirs[k] else None
                                    for k in ours},
                      "agreement": agreement(preds, teacher, spec)}
        arrays.update({split: preds, f"teacher_{split}": teacher, f"labels_{split}": labels})
    _save_npz_atomic(predictions_path, arrays)
    return {**out, "predictions": predictions_path.name}


def time_student(teacher, student, dev, *, precision: str, seed: int, measure_speed) -> dict:
    """Teacher and student timed in the same run on the dev split's real lengths, by
    `measure_speed` (`layergraft.pipeline.bench`'s, which the pipeline hands in)."""
    lengths = [len(ids) for ids in dev["input_ids"]]
    rows = measure_speed({"teacher": teacher, "student": student.eval()}, lengths,
                         precision=precision, seed=seed)
    ratio = {str(r["batch_size"]): r["throughput_ratio"] for r in rows
             if r["model"] == "student"}
    return {"throughput_ratio": ratio, "records": rows}


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())
