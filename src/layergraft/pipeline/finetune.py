"""`layergraft finetune`: make a teacher, a pretrained encoder plus a new head trained on a task.

The training itself is :func:`layergraft.training.train.train` with a
:class:`~layergraft.training.train.TrainConfig` (whose defaults were measured); this adds the
new head, the test score, the saved model and its record.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

from transformers import set_seed

from layergraft.data.tasks import Task
from layergraft.models import check_output_dir, load_classifier, save_model
from layergraft.objectives.task.evaluation import evaluate_model
from layergraft.training.parallel import process_state
from layergraft.training.train import TrainConfig, train
from layergraft.utils import versions, write_json_atomic

RESULTS_NAME = "finetune_results.json"
CHECKPOINTS = "checkpoints"


def finetune(
    model_name_or_path: str,
    task: Task,
    out_dir: str,
    config: TrainConfig | None = None,
    *,
    overwrite: bool = False,
) -> dict:
    """Make a teacher: a pretrained encoder plus a new head for ``task``, trained with
    ``config`` and saved (best dev checkpoint, with tokenizer) to ``out_dir`` together with
    ``finetune_results.json`` (dev and, where labeled, test metrics; time; settings).

    Checkpoints live in ``out_dir/checkpoints`` while training, so an interrupted run resumes
    when called again, and are deleted once the model is saved.
    """
    check_output_dir(out_dir, overwrite)
    checkpoints = Path(out_dir) / CHECKPOINTS
    config = replace(config or TrainConfig(output_dir=""), output_dir=str(checkpoints))
    set_seed(config.seed)  # the new head's initial weights
    model, tokenizer = load_classifier(model_name_or_path, task.spec.num_labels)
    if task.spec.label_names:
        model.config.id2label = dict(enumerate(task.spec.label_names))
        model.config.label2id = {name: i for i, name in enumerate(task.spec.label_names)}
    runtime = config.runtime()
    result = train(model, tokenizer, task, config)
    state = process_state(runtime)
    record = {"task": task.spec.name, "base_model": model_name_or_path,
              "dev": result.metrics, "global_step": result.global_step,
              "train_seconds": round(result.train_seconds, 1),
              "config": {k: v for k, v in asdict(config).items() if k != "output_dir"},
              "runtime": runtime.record(), "versions": versions()}
    if state.is_main_process:
        if task.labeled("test"):
            record["test"] = evaluate_model(result.model, tokenizer, task, "test",
                                            batch_size=config.eval_batch_size,
                                            max_length=config.max_length,
                                            precision=runtime.precision,
                                            progress=config.progress)["metrics"]
        save_model(result.model.eval(), tokenizer, out_dir, overwrite=overwrite)
        write_json_atomic(Path(out_dir) / RESULTS_NAME, record)
        shutil.rmtree(checkpoints, ignore_errors=True)
    state.wait_for_everyone()
    return record
