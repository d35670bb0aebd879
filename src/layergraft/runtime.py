"""Where models run and in what precision, chosen by the hardware unless the user says.

bfloat16 autocast is about 2.5x faster than float32 on a CPU that computes it natively
(AVX512-BF16 or AMX) and about 20x slower on one that emulates it (AVX2 only), so `auto`
never guesses: it reads the CPU's feature flags. On CUDA, `auto` is bf16 where the GPU
supports it, else fp16; everywhere else (MPS, other CPUs) fp32.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from layergraft.errors import LayergraftError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = "auto, cpu, cuda, cuda:N or mps"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_features() -> dict[str, bool]:
    """The CPU's bf16-relevant feature flags, from torch's own probe (or /proc/cpuinfo)."""
    probe = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    flags = probe() if callable(probe) else {}
    if not flags:
        cpuinfo = Path("/proc/cpuinfo")
        text = cpuinfo.read_text() if cpuinfo.is_file() else ""
        found = set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", text))
        flags = {name: name in found for name in ("avx512_bf16", "amx_bf16")}
    return {name: bool(flags.get(name)) for name in ("avx512_bf16", "amx_bf16")}


def cpu_capability() -> str:
    """torch's name for the CPU's vector unit (AVX2, AVX512, ...) plus its native bf16 units."""
    extras = [name.split("_")[0].upper() + "-BF16" for name, on in cpu_features().items() if on]
    return " ".join([torch.backends.cpu.get_cpu_capability(), *extras])


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware rather than emulating it."""
    if device.type == "cpu":
        return any(cpu_features().values())
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`: the first GPU (CUDA, then MPS), else the CPU; otherwise the named device,
    checked to exist here."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise LayergraftError(f"unknown device '{name}': choose {DEVICES}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise LayergraftError(f"device '{name}' is not here ({count} CUDA devices): choose "
                                  "--device cpu, or one of the GPUs this machine has")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise LayergraftError("device 'mps' is not available here: choose --device cpu")
    elif device.type != "cpu" and device.type not in ("cuda", "mps"):
        raise LayergraftError(f"unsupported device '{name}': choose {DEVICES}")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` becomes what `device` computes fastest; an explicit choice is checked."""
    if name not in PRECISIONS:
        raise LayergraftError(f"unknown precision '{name}': choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if native_bf16(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise LayergraftError(f"fp16 autocast needs a CUDA device, not {device.type}: choose "
                              "--precision auto, fp32 or bf16")
    return name


@dataclass(frozen=True)
class Runtime:
    """A resolved device and precision; `record()` is what results files keep of it."""

    device: torch.device
    precision: str

    @classmethod
    def resolve(cls, device: str | torch.device = "auto", precision: str = "auto") -> Runtime:
        resolved = resolve_device(device)
        return cls(resolved, resolve_precision(precision, resolved))

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision autocast for bf16/fp16; a no-op context for fp32."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued GPU work, so a clock read after it measures the work itself."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> str:
        where = (f"cpu ({cpu_capability()})" if self.device.type == "cpu" else str(self.device))
        return f"{where}, {self.precision}"

    def record(self) -> dict:
        data = {"device": str(self.device), "precision": self.precision}
        if self.device.type == "cpu":
            data["cpu_capability"] = cpu_capability()
        return data

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window, so that `peak_memory()` measures one run even in a
        process that has run others (Linux resets the peak RSS when 5 is written to
        /proc/self/clear_refs; elsewhere the window is the process's life)."""
        with contextlib.suppress(OSError):
            _CLEAR_REFS.write_text("5")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> dict:
        """Peak resident memory of the process since `reset_peak_memory` (bytes; Linux only),
        and on CUDA the peak of memory allocated by torch."""
        data = {}
        with contextlib.suppress(OSError):
            found = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
            if found:
                data["peak_rss_bytes"] = int(found.group(1)) * 1024
        if self.device.type == "cuda":
            data["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(self.device)
        return data


_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
