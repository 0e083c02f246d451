"""The device and precision a run computes in: ``auto`` resolved from the hardware.

Below ``builtin/`` and ``train/``: the built-ins' pretraining and every fine-tuning run
decide bf16 by the same rule, so neither package imports the other for it.
"""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """Turn ``auto`` into cuda, mps or cpu; pass explicit devices through."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 matmul instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"
