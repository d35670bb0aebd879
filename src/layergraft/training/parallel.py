"""Which device and which data-parallel processes training runs on (Accelerate's view)."""

from __future__ import annotations

import torch
from accelerate import PartialState

from layergraft.runtime import Runtime


def has_accelerator() -> bool:
    """A GPU (CUDA, MPS or XPU) is there; otherwise training runs on the CPU."""
    return torch.cuda.is_available() or torch.backends.mps.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available())


def process_state(runtime: Runtime | None = None) -> PartialState:
    """The data-parallel state the Trainer will use (on the CPU when `runtime` says so, or
    when there is no GPU). Accelerate only recognises processes started by torchrun on a
    machine without GPUs when asked for cpu=True."""
    cpu = runtime.device.type == "cpu" if runtime is not None else not has_accelerator()
    return PartialState(cpu=cpu)
