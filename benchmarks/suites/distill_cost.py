"""What a distillation step and a heal step cost next to a fine-tuning step of the same student.

The student is all-MiniLM-L6-v2 cut to 3 layers; the teacher is the 6-layer model (its
weights do not change the cost). Six arms train their own copy of the student on the
same batches: fine-tuning on labels, distillation from cached logits, cached logits +
hidden states, a live teacher, and local healing (`layergraft.training.heal`, on cached
teacher states) of every new layer at once, as `--heal` runs it, and of one layer alone.
Arms take turns step by step (rotating order), so load from other processes hits all of
them alike; the medians of the step times give the ratios (data loading and Trainer
bookkeeping, the same for every arm, only bring real epochs closer to 1). Writes one JSON
record.

    python benchmarks/distill_cost.py out.json --steps 40 --precision auto
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from itertools import islice

import torch

from layergraft.data.encoding import EXAMPLE_ID, encode, loader
from layergraft.data.tasks import load_task
from layergraft.models import default_model_path, load_classifier
from layergraft.runtime import PRECISIONS, Runtime
from layergraft.surgery.graft import graft_model
from layergraft.training.distill import (
    DistillConfig,
    TeacherCache,
    layer_map_from_manifest,
    make_distill_loss,
)
from layergraft.training.heal import HealLoss, heal_spans, healable

WARMUP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--model", default=None, help="default: the offline MiniLM")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    args = parser.parse_args()

    task = load_task("movie-sentiment")
    teacher, tokenizer = load_classifier(args.model or default_model_path(), num_labels=2)
    runtime = Runtime.resolve("auto", args.precision)
    device = runtime.device
    teacher.to(device)
    max_length = min(128, teacher.config.max_position_embeddings)
    train = encode(task, tokenizer, max_length, splits=["train"])["train"]
    student, manifest = graft_model(teacher, layers=3, method="drop-alternate")
    layer_map = layer_map_from_manifest(manifest)
    record: dict = {"steps": args.steps, "batch_size": args.batch_size, **runtime.record(),
                    "threads": torch.get_num_threads(), "train_examples": len(train),
                    "layer_map": layer_map}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        logits = TeacherCache.build(teacher, train, tokenizer, cache_dir=tmp)
        record["cache_build_logits_s"] = time.perf_counter() - start
        start = time.perf_counter()
        hidden = TeacherCache.build(teacher, train, tokenizer, layers=layer_map, cache_dir=tmp)
        record["cache_build_hidden_s"] = time.perf_counter() - start
        span_ends = manifest.span_ends()
        layers = healable(span_ends)
        states = TeacherCache.build(teacher, train, tokenizer, cache_dir=tmp,
                                    layers=sorted({i for s in heal_spans(span_ends) for i in s}))
        record["healed_layers"] = layers
        arms = {
            "finetune": None,
            "distill_cached": make_distill_loss(logits, DistillConfig()),
            "distill_cached_hidden": make_distill_loss(
                hidden, DistillConfig(hidden_weight=1.0), layer_map=layer_map),
            "distill_live": make_distill_loss(teacher, DistillConfig()),
            "heal_all": HealLoss(states, span_ends, layers),
            "heal_one_layer": HealLoss(states, span_ends, layers[:1]),
        }
        seconds = _time_steps(arms, student, train, tokenizer, args, runtime)
    record["step_seconds_median"] = {name: statistics.median(s) for name, s in seconds.items()}
    base = record["step_seconds_median"]["finetune"]
    record["ratio_to_finetune"] = {name: s / base
                                   for name, s in record["step_seconds_median"].items()}
    distill = record["step_seconds_median"]["distill_cached"]
    record["heal_ratio_to_distill"] = {name: record["step_seconds_median"][name] / distill
                                       for name in ("heal_all", "heal_one_layer")}
    record["epoch_seconds_estimate"] = {
        name: s * len(train) / args.batch_size for name, s in record["step_seconds_median"].items()}
    with open(args.out, "w") as handle:
        json.dump(record, handle, indent=1)
    print(json.dumps(record["ratio_to_finetune"]))


def _time_steps(arms, student, train, tokenizer, args, runtime) -> dict[str, list[float]]:
    device = runtime.device
    models = {name: copy.deepcopy(student).to(device).train() for name in arms}
    for name, model in models.items():  # a heal arm trains its layers alone
        getattr(arms[name], "freeze_others", lambda m: None)(model)
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad],
                                          lr=5e-5) for name, m in models.items()}
    names = list(arms)
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    batches = islice(loader(train, tokenizer, args.batch_size, shuffle=True), args.steps)
    for step, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        for name in names[step % len(names):] + names[:step % len(names)]:
            begin = time.perf_counter()
            with runtime.autocast():
                if arms[name] is None:
                    loss = models[name](**{k: v for k, v in batch.items()
                                           if k != EXAMPLE_ID}).loss
                else:
                    loss = arms[name](models[name], batch)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            runtime.synchronize()
            if step >= WARMUP:
                seconds[name].append(time.perf_counter() - begin)
    return seconds

