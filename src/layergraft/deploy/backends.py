"""The backends `bench` runs a model on: one runner per backend, each running a batch dict.

- torch-fp32, torch-bf16: the PyTorch model (bf16 under autocast, and only where bf16 is
  native: emulated bf16 is many times slower and would only measure the emulation)
- torch-int8: `torch.ao.quantization.quantize_dynamic` of the Linear layers (qint8 weights,
  activations quantised on the fly), on a copy of the model
- onnx-fp32, onnx-int8, onnx-int8-static and the fused onnx-opt-fp32, onnx-opt-int8,
  onnx-opt-int8-static: an export folder's graphs (`layergraft.deploy.variants` names them:
  `onnx-[opt-]PRECISION`) in ONNX Runtime, with the intra-op thread count torch uses, so both
  sides get the same cores

A backend that cannot run here is a reason (a string), recorded as skipped, not a runner.
"""

from __future__ import annotations

import copy
import io
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PretrainedConfig

from layergraft.deploy import onnx as graph
from layergraft.deploy.variants import GRAPHS
from layergraft.errors import LayergraftError
from layergraft.runtime import Runtime, cpu_capability, native_bf16

ONNX_GRAPHS = {g.backend: g for g in GRAPHS}
BACKENDS = ("torch-fp32", "torch-bf16", "torch-int8", *ONNX_GRAPHS)
ONNX_FILES = {backend: g.file for backend, g in ONNX_GRAPHS.items()}
CPU_ONLY = ("torch-int8", *ONNX_FILES)
REPORT_FILE = "export_report.json"  # what export_model writes beside the graphs


def parse_backends(names: Sequence[str]) -> list[str]:
    """Checked backend names, in the order given (the first is the speed reference)."""
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise LayergraftError(f"unknown backend '{unknown[0] if unknown else ''}': --backends "
                              f"takes a comma-separated list of {', '.join(BACKENDS)}")
    if len(set(names)) != len(names):
        raise LayergraftError("a backend is named twice in --backends: give each once")
    return names


def default_backend(precision: str) -> str:
    """The backend of a run without --backends: PyTorch in the run's precision."""
    return f"torch-{precision}"


def is_export_folder(path: str | Path) -> bool:
    """Whether `path` is a folder `layergraft export` wrote (it has no PyTorch weights)."""
    return (Path(path) / graph.FP32_FILE).is_file() and (Path(path) / REPORT_FILE).is_file()


@dataclass
class ExportedModel:
    """An export folder given as a model: its config and graphs stand in for the model."""

    config: PretrainedConfig
    folder: Path
    inputs: list[str]
    device: torch.device = torch.device("cpu")

    @classmethod
    def load(cls, folder: str | Path, config: PretrainedConfig) -> ExportedModel:
        report = json.loads((Path(folder) / REPORT_FILE).read_text())
        return cls(config, Path(folder), list(report["inputs"]))

    def num_parameters(self) -> int:
        """Weights stored in the fp32 graph (its initializers)."""
        import onnx

        model = onnx.load(str(self.folder / graph.FP32_FILE), load_external_data=False)
        return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


class Runner:
    """Runs one model on one backend: `prepare` turns batch dicts of tensors into what it
    takes (once, outside the timing), `timed` is the seconds of one pass over them."""

    backend: str
    size_bytes: int | None = None

    def prepare(self, batches: Sequence[Mapping[str, torch.Tensor]]) -> list:
        raise NotImplementedError

    def timed(self, prepared: Sequence) -> float:
        raise NotImplementedError

    def logits(self, prepared: Sequence) -> np.ndarray:
        """The outputs of every prepared batch, as float32 rows in batch order."""
        raise NotImplementedError

    def record(self) -> dict:
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, backend: str, model: torch.nn.Module, runtime: Runtime):
        self.backend, self.model, self.runtime = backend, model, runtime
        if backend == "torch-int8":
            self.size_bytes = _state_bytes(model)

    def prepare(self, batches):
        return [{k: v.to(self.runtime.device) for k, v in b.items()} for b in batches]

    def timed(self, prepared) -> float:
        """Queued GPU work is waited for on both sides of the clock."""
        with torch.inference_mode(), self.runtime.autocast():
            self.runtime.synchronize()
            start = time.perf_counter()
            for batch in prepared:
                self.model(**batch)
            self.runtime.synchronize()
            return time.perf_counter() - start

    def logits(self, prepared) -> np.ndarray:
        with torch.inference_mode(), self.runtime.autocast():
            return np.concatenate([self.model(**b).logits.float().cpu().numpy()
                                   for b in prepared])

    def record(self) -> dict:
        precision = "int8" if self.backend == "torch-int8" else self.runtime.precision
        return {"backend": self.backend, **self.runtime.record(), "precision": precision}


class OnnxRunner(Runner):
    def __init__(self, backend: str, path: Path, threads: int):
        self.backend, self.path = backend, path
        self.session = graph.session(path, threads)
        self.names = [i.name for i in self.session.get_inputs()]
        self.size_bytes = path.stat().st_size

    def prepare(self, batches):
        """Feeds of int64 arrays; token_type_ids are zeros where the graph takes them and the
        batch has none (what the PyTorch model assumes when they are left out)."""
        feeds = []
        for batch in batches:
            ids = np.asarray(batch["input_ids"], dtype=np.int64)
            feeds.append({n: np.asarray(batch[n], dtype=np.int64) if n in batch
                          else np.zeros_like(ids) for n in self.names})
        return feeds

    def timed(self, prepared) -> float:
        start = time.perf_counter()
        for feed in prepared:
            self.session.run([graph.OUTPUT], feed)
        return time.perf_counter() - start

    def logits(self, prepared) -> np.ndarray:
        return np.concatenate([self.session.run([graph.OUTPUT], f)[0] for f in prepared])

    def record(self) -> dict:
        import onnxruntime

        fused = ONNX_GRAPHS[self.backend].fused
        return {"backend": self.backend, "device": "cpu", "cpu_capability": cpu_capability(),
                "precision": ONNX_GRAPHS[self.backend].precision,
                **({"fused": True} if fused else {}), "onnxruntime": onnxruntime.__version__}


def build_runner(backend: str, model, runtime: Runtime, threads: int,
                 folder: Path | None = None) -> Runner | str:
    """The runner of `model` on `backend`, or why it cannot run here. `folder` is the model's
    export folder (needed by the onnx backends); `runtime` is where torch models run."""
    if backend in CPU_ONLY and runtime.device.type != "cpu":
        raise LayergraftError(f"backend {backend} runs on the CPU: pass --device cpu")
    if backend in ONNX_FILES:
        path = (folder or Path()) / ONNX_FILES[backend]
        if folder is None or not path.is_file():
            return f"no {ONNX_FILES[backend]} (export with {ONNX_GRAPHS[backend].how()})"
        return OnnxRunner(backend, path, threads)
    if isinstance(model, ExportedModel):
        return "an export folder has no PyTorch weights"
    if backend == "torch-int8":
        with warnings.catch_warnings():  # torch 2.x announces the move to torchao
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            quantized = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model).float().eval(), {torch.nn.Linear}, dtype=torch.qint8)
        return TorchRunner(backend, quantized, Runtime(runtime.device, "fp32"))
    precision = backend.split("-")[1]
    if precision == "bf16" and not native_bf16(runtime.device):
        return f"bf16 is not native on this {runtime.device.type} ({cpu_capability()})"
    return TorchRunner(backend, model, Runtime(runtime.device, precision))


def _state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's saved state (what a quantized model takes on disk)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
