"""The compute device: choosing it, synchronising it before reading a clock, describing it for provenance."""

from __future__ import annotations

import contextlib
import os
import platform
import time

import torch

from octbench.errors import OctbenchError


def resolve(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OctbenchError(f"device '{requested}' was asked for but CUDA is not available; use --device cpu or auto.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OctbenchError("device 'mps' was asked for but is not available; use --device cpu or auto.")
    return device


def deterministic_algorithms(enabled: bool) -> None:
    """Ask torch for deterministic algorithms in this process, or stop asking. On CUDA this needs a fixed cuBLAS
    workspace (set before the first matrix product) and cuDNN's deterministic kernels; an op that has no
    deterministic kernel warns instead of failing the cell."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def clock(device: torch.device) -> float:
    """A wall-clock reading taken after all queued device work has finished."""
    synchronize(device)
    return time.perf_counter()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def as_float(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch as float32 (uint8 scaled by 1/255), channels-last when asked."""
    x = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``, else nothing."""
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
