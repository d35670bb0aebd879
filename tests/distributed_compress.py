"""One `compress` of the tiny task; tests/test_distributed.py runs it under torchrun and alone.

Usage: python distributed_compress.py TEACHER TASK OUT CACHE
"""

from __future__ import annotations

import sys

from layergraft.pipeline.compress import compress
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.training.distill import DistillConfig
from layergraft.training.train import TrainConfig

GLOBAL_BATCH = 16  # split among the processes, so every run sees the same batches


def main(teacher: str, task: str, out: str, cache: str) -> None:
    compress(
        teacher, task, layers=2, out_dir=out, strategy="distill", budget="2 epochs",
        distill=DistillConfig(hidden_weight=1.0, task_weight=0.5), cache_dir=cache,
        training=TrainConfig(output_dir="", batch_size=GLOBAL_BATCH, learning_rate=1e-3,
                             max_length=24, progress=False),
        analysis=AnalysisSettings(samples=32, batch_size=16, max_length=24, progress=False),
        speed=False, progress=False, precision="fp32",  # an exactness test: no autocast
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
