"""Data-parallel `compress` (torchrun, 2 CPU processes, gloo) matches one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task

from layergraft.models import load_classifier
from layergraft.surgery.manifest import Manifest, replay

SCRIPT = Path(__file__).with_name("distributed_compress.py")
assert one_thread  # an autouse fixture


def launch(processes: int, *args) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(processes)]
    command = [*(torchrun if processes > 1 else [sys.executable]), str(SCRIPT), *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_two_process_distillation_matches_one_process(tmp_path):
    task = write_tiny_task(tmp_path / "task")
    # no dropout: the two runs then differ only by how the global batch is split
    teacher = train_tiny_teacher(tmp_path, task, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    for name, processes in (("two", 2), ("one", 1)):
        launch(processes, teacher, task, tmp_path / name, tmp_path / f"cache-{name}")

    results = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in ("two", "one")}
    stages = {n: [{k: v for k, v in stage.items() if k != "seconds"}
                  for stage in r["train"]["stages"]] for n, r in results.items()}
    assert stages["two"] == stages["one"] and stages["one"][0]["global_step"] == 8
    assert results["two"]["dev"]["metrics"] == results["one"]["dev"]["metrics"]
    # the teacher cache the two processes shared was written once, completely
    assert {p.name for p in (tmp_path / "cache-two" / "teacher").rglob("*.safetensors")} == {
        "logits.safetensors", "hidden-2.safetensors", "hidden-4.safetensors"}

    two, one = (load_file(tmp_path / n / "model.safetensors") for n in ("two", "one"))
    gap = max(float((two[k] - one[k]).abs().max()) for k in one)
    model, _ = load_classifier(teacher)
    start = replay(model, Manifest.load(tmp_path / "one")).state_dict()
    moved = max(float((one[k] - start[k]).abs().max()) for k in one)
    assert gap < 1e-4 and moved > 100 * gap
