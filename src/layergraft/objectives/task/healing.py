"""The healing stage of a compress run: heal the fresh student once, keep it, resume from it.

Healing (`layergraft.training.heal`) runs right after surgery and before any global training;
its cost is charged against the run's budget by the rule in that module, so a healed run trains
for that many fewer distillation steps. The healed student is saved in the run's `healed/`
work folder, so an interrupted run does not heal again.
"""

from __future__ import annotations

import json
from pathlib import Path

from layergraft.models import holds_model, load_classifier, save_model
from layergraft.objectives.runs import HEALED
from layergraft.surgery.arch import num_layers
from layergraft.surgery.manifest import Manifest
from layergraft.training.heal import HealConfig, heal, heal_charge, healable
from layergraft.utils import write_json_atomic

HEAL_RECORD = "heal.json"


def heal_stage(student, manifest: Manifest, teacher, train, tokenizer, config: HealConfig, *,
               out: Path, runtime, train_batch: int, cache_dir, seed: int, progress: bool,
               is_main: bool = True):
    """(healed student, its record with the `charge` in distillation steps)."""
    folder = out / HEALED
    if holds_model(folder):
        healed, _ = load_classifier(str(folder))
        return healed.to(runtime.device), json.loads((folder / HEAL_RECORD).read_text())
    record = heal(student, teacher, train, tokenizer, manifest.span_ends(), config,
                  runtime=runtime, cache_dir=cache_dir, seed=seed, progress=progress)
    record["charge"] = heal_charge(config, num_layers(student.config),
                                   len(healable(manifest.span_ends())), train_batch)
    if is_main:
        save_model(student, tokenizer, folder, manifest=manifest, overwrite=True)
        write_json_atomic(folder / HEAL_RECORD, record)
    return student, record
