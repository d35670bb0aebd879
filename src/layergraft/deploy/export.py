"""`export_model`: a classifier folder -> an ONNX folder that serves without PyTorch, verified.

The folder holds `model.onnx` (fp32), `model.int8.onnx` with `quantize="int8"`,
`model.int8-static.onnx` with "int8-static", and with `optimize` the same graphs fused by
ONNX Runtime's transformer optimizer (`model.opt*.onnx`; `layergraft.deploy.variants` names
them all), the tokenizer, `config.json`, the graft manifest when the model has one,
`export_report.json` (inputs, files and sizes, and every check) and a model card
(`README.md`) generated from the report and the manifest. It is written to a staging
folder and moved into place; a failed check is recorded in the report, and then raised as one
line. Export runs on the CPU in fp32. `format="gguf"` hands a decoder LLM to
`layergraft.deploy.gguf` (model.gguf for llama.cpp and ollama), in the same kind of folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from layergraft.data.tasks import Task
from layergraft.deploy import onnx as graph
from layergraft.deploy import variants, verify
from layergraft.errors import LayergraftError
from layergraft.models import check_output_dir, load_config, load_for_task, load_trained
from layergraft.report.export_card import write_export_card
from layergraft.surgery.arch import num_layers
from layergraft.surgery.manifest import MANIFEST_NAME
from layergraft.utils import versions, write_json_atomic

REPORT_FILE = "export_report.json"
FORMATS = ("onnx", "gguf")
# Any one of these in a local folder means it has a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "spm.model", "sentencepiece.bpe.model")


def export_model(model_path: str, out: str | os.PathLike, *,
                 quantize: str | Sequence[str] | None = None, optimize: bool = False,
                 task: Task | None = None, split: str | None = None,
                 calibration: Task | None = None,
                 overwrite: bool = False, allow_untrained_head: bool = False,
                 format: str = "onnx", gguf_type: str | None = None) -> dict:
    """Export `model_path` to `out` and verify it; returns the report (also in the folder).
    `quantize` is int8 (dynamic), int8-static or both (a comma list or a sequence);
    `optimize` adds the fused graphs. `task` checks the logits on its dev split (or `split`)
    and scores int8 against fp32; static int8 calibrates on the training texts of
    `calibration` (default `task`; without either, on the built-in sentences).
    `format="gguf"` writes a decoder as model.gguf instead (`layergraft.deploy.gguf`; its
    precision `gguf_type`), and takes none of the ONNX options."""
    if format not in FORMATS:
        raise LayergraftError(f"unknown --format '{format}': choose {' or '.join(FORMATS)}")
    if format == "gguf":
        onnx_only = [flag for flag, given in (("--quantize", quantize), ("--optimize", optimize),
                                              ("--task", task)) if given]
        if onnx_only:
            raise LayergraftError(f"{', '.join(onnx_only)}: ONNX options, not for --format "
                                  "gguf (its precision is --gguf-type)")
        from layergraft.deploy.gguf import export_gguf

        return export_gguf(model_path, out, gguf_type=gguf_type, overwrite=overwrite)
    if gguf_type is not None:
        raise LayergraftError("--gguf-type applies to --format gguf only")
    quantize = variants.parse_quantize(quantize)
    config = load_config(model_path)  # refuses an unsupported architecture
    check_tokenizer(model_path)
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
    staging = staging_folder(target)
    try:
        graph.export_onnx(model, tokenizer, staging / graph.FP32_FILE, names)
        made = variants.write_graphs(model, tokenizer, names, staging, quantize, optimize,
                                     calibration or task)
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
                  "graphs": variants.listing(staging), "files": variants.sizes(staging),
                  **({"task": task.spec.name, "split": split} if task is not None else {}),
                  **made, **report, "versions": _versions()}
        publish(staging, target, report, manifest, write_export_card)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    failed = [g.name for g in variants.GRAPHS
              if report.get(g.name, {}).get("passed") is False]
    if failed:
        raise LayergraftError("export verification failed (see " + str(target / REPORT_FILE)
                              + "): " + "; ".join(variants.failure(name, report[name])
                                                  for name in failed))
    return report


def check_tokenizer(model_path: str) -> None:
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
    return variants.check_graphs(folder, verify.torch_logits(model, batches), batches, data,
                                 task, labels)


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {**versions(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def staging_folder(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir()
    return staging


def publish(staging: Path, target: Path, report: dict, manifest: Path,
            write_card: Callable[[Path, dict, dict | None], object]) -> None:
    """The report and the card (from it and the source's graft manifest, if any) into the
    staging folder, then the folder into place: the last steps of every export."""
    write_json_atomic(staging / REPORT_FILE, report)
    write_card(staging, report, json.loads(manifest.read_text()) if manifest.is_file() else None)
    move_into_place(staging, target)


def move_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
