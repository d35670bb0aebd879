"""`export_model`: a classifier folder -> an ONNX folder that serves without PyTorch, verified.

The folder holds `model.onnx` (fp32), `model.int8.onnx` with `quantize="int8"`, the
tokenizer, `config.json`, the graft manifest when the model has one,
`export_report.json` (inputs, files and sizes, and every check) and a model card
(`README.md`) generated from the report and the manifest. It is written to a staging
folder and moved into place; a failed check is recorded in the report, and then raised as one
line. Export runs on the CPU in fp32.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from layergraft.data.tasks import Task
from layergraft.deploy import onnx as graph
from layergraft.deploy import verify
from layergraft.errors import LayergraftError
from layergraft.models import check_output_dir, load_config, load_for_task, load_trained
from layergraft.report.export_card import write_export_card
from layergraft.surgery.arch import num_layers
from layergraft.surgery.manifest import MANIFEST_NAME
from layergraft.utils import versions, write_json_atomic

REPORT_FILE = "export_report.json"
QUANTIZE = ("int8",)
# Any one of these in a local folder means it has a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spm.model", "sentencepiece.bpe.model")


def export_model(model_path: str, out: str | os.PathLike, *, quantize: str | None = None,
                 task: Task | None = None, split: str | None = None,
                 overwrite: bool = False, allow_untrained_head: bool = False) -> dict:
    """Export `model_path` to `out` and verify it; returns the report (also in the folder).
    `task` checks the logits on its dev split (or `split`) and scores int8 against fp32."""
    if quantize not in (None, *QUANTIZE):
        raise LayergraftError(f"--quantize must be one of {', '.join(QUANTIZE)}, not "
                              f"'{quantize}'")
    config = load_config(model_path)  # refuses an unsupported architecture
    _check_tokenizer(model_path)
    target = Path(out)
    check_output_dir(target, overwrite)
    if (target / graph.FP32_FILE).exists() and not overwrite:
        raise LayergraftError(f"'{target}' already holds a model: choose another --out or "
                              "pass --overwrite")
    split = split or (task.spec.eval_splits[0] if task is not None else None)
    if task is not None:
        model, tokenizer = load_for_task(model_path, task,
                                         allow_untrained_head=allow_untrained_head)
    else:
        model, tokenizer = load_trained(model_path, allow_untrained_head=allow_untrained_head)
    names = graph.input_names(model, tokenizer)
    staging = _staging(target)
    try:
        graph.export_onnx(model, tokenizer, staging / graph.FP32_FILE, names)
        if quantize == "int8":
            graph.quantize_int8(staging / graph.FP32_FILE, staging / graph.INT8_FILE)
        tokenizer.save_pretrained(staging)
        config.save_pretrained(staging)
        manifest = Path(model_path) / MANIFEST_NAME
        if manifest.is_file():
            shutil.copy2(manifest, staging / MANIFEST_NAME)
        report = _verify(model, tokenizer, names, staging, task, split)
        report = {"source": str(model_path), "model_type": config.model_type,
                  "layers": num_layers(config),
                  "exporter": f"torch.onnx.export (TorchScript, dynamo=False), opset "
                              f"{graph.OPSET}",
                  "inputs": names, "outputs": [graph.OUTPUT],
                  "dynamic_axes": {"batch": 0, "sequence": 1},
                  "files": _files(staging),
                  **({"task": task.spec.name, "split": split} if task is not None else {}),
                  **report, "versions": _versions()}
        write_json_atomic(staging / REPORT_FILE, report)
        write_export_card(staging, report, json.loads(manifest.read_text())
                          if manifest.is_file() else None)
        _move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    failed = [name for name in ("fp32", "int8") if report.get(name, {}).get("passed") is False]
    if failed:
        details = {"fp32": lambda r: f"max abs logit difference {r['max_abs_diff']:.2e} > "
                                     f"{r['tolerance']:.0e}",
                   "int8": lambda r: f"{r['metric']} {100 * r['int8']:.2f} vs fp32 "
                                     f"{100 * r['fp32']:.2f}, agreement "
                                     f"{100 * r['agreement']:.1f}%"}
        raise LayergraftError("export verification failed (see " + str(target / REPORT_FILE)
                              + "): " + "; ".join(f"{name}: {details[name](report[name])}"
                                                  for name in failed))
    return report


def _check_tokenizer(model_path: str) -> None:
    folder = Path(model_path)
    if folder.is_dir() and not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise LayergraftError(f"'{model_path}' has no tokenizer (none of "
                              f"{', '.join(TOKENIZER_FILES)}): save the model's tokenizer "
                              "beside it (tokenizer.save_pretrained)")


def _verify(model, tokenizer, names, folder: Path, task: Task | None, split: str | None
            ) -> dict:
    if task is not None:
        batches, labels = verify.task_batches(task, tokenizer, names, split)
        data = f"{task.spec.name} {split}"
    else:
        batches, labels = verify.sentence_batches(tokenizer, names), None
        data = "built-in sentences"
    reference = verify.torch_logits(model, batches)
    fp32 = verify.onnx_logits(graph.session(folder / graph.FP32_FILE), batches)
    report = {"fp32": verify.fp32_check(reference, fp32, data)}
    if (folder / graph.INT8_FILE).exists():
        int8 = verify.onnx_logits(graph.session(folder / graph.INT8_FILE), batches)
        report["int8"] = {"data": data, "per_channel": graph.PER_CHANNEL,
                          **verify.int8_check(fp32, int8, task, labels)}
    return report


def _files(folder: Path) -> dict:
    sizes = {name: (folder / name).stat().st_size for name in (graph.FP32_FILE, graph.INT8_FILE)
             if (folder / name).exists()}
    if graph.INT8_FILE in sizes:
        sizes["int8_size_ratio"] = sizes[graph.INT8_FILE] / sizes[graph.FP32_FILE]
    return sizes


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {**versions(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _staging(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir()
    return staging


def _move_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
