"""The built-in demo: the headline comparison on the offline model and data, in minutes.

Fine-tunes the offline all-MiniLM-L6-v2 on movie-sentiment once (the teacher is reused
on later runs), then compares `graft` with the best plain layer drop (keep-alternate)
at 2 of 6 layers, straight after surgery and after a short distillation budget. For
speed it trains on length-grouped batches and scores dev and test only (the benchmark adds
the out-of-domain sets).
"""

from __future__ import annotations

import os
from pathlib import Path

from layergraft.models import default_model_path, holds_model
from layergraft.pipeline.compare import RunKey, run_comparison
from layergraft.pipeline.finetune import finetune
from layergraft.training.train import TrainConfig, student_training

TASK = "movie-sentiment"
RIVAL = "drop-alternate"


def run_demo(out_dir: str | os.PathLike = "runs/demo", *, layers: int = 2,
             budget: str = "0.75 epochs", teacher_epochs: float = 1.0,
             precision: str = "auto", device: str = "auto",
             progress: bool = True) -> list[dict]:
    """Teacher (once), then graft vs keep-alternate, surgery only and distilled: rows."""
    from layergraft.data.tasks import load_task

    out = Path(out_dir)
    teacher = out / "teacher"
    if not holds_model(teacher):
        config = TrainConfig(output_dir="", epochs=teacher_epochs, precision=precision,
                             device=device, progress=progress, group_by_length=True)
        finetune(default_model_path(), load_task(TASK), str(teacher), config)
    runs = [RunKey(method, strategy, layers)
            for strategy in ("none", "distill") for method in ("graft", RIVAL)]
    return run_comparison(str(teacher), TASK, out / "compare", runs, budget=budget,
                          precision=precision, device=device, progress=progress, ood=False,
                          training=student_training(group_by_length=True),
                          title=f"layergraft demo: graft vs {RIVAL} at {layers} layers")
