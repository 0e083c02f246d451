"""Peak memory of one run, each number named for what it measures.

CUDA: the caching allocator's peaks since the run began: ``max_memory_allocated`` (live
tensors, the base weights included) and ``max_memory_reserved`` (what the allocator holds
from the driver, the number ``nvidia-smi`` is closer to).

CPU: the growth of resident memory during the run, peak RSS minus RSS at its start. The
process high-water mark would count the base model, the token blocks and every earlier
run of the process, which reads as model memory and is not. Linux resets the peak
(``/proc/self/clear_refs``) so the peak is exact; elsewhere a thread samples RSS. Memory
that the C allocator kept from an earlier run and hands out again does not grow RSS, so
in a process that ran bigger runs before, the growth is a lower bound.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import torch

from loraplace.peak_memory import LABELS

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where it cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class MemoryMeter:
    """Measures one run: ``start()`` before it, ``stop()`` after (returns metrics)."""

    def __init__(self, device: torch.device, sample_s: float = 0.01):
        self.device = device
        self.sample_s = sample_s
        self._rss0 = 0
        self._peak = 0
        self._exact = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._exact = _reset_hwm()
        # The baseline is read after the reset, from the counter itself: a garbage
        # collection between a separate RSS read and the reset could free more than the
        # run then allocates, and the run would read as no growth at all.
        hwm = _status_kib("VmHWM") if self._exact else None
        self._rss0 = self._peak = hwm * 1024 if hwm is not None else _rss_bytes()
        if not self._exact:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(self.sample_s):
            self._peak = max(self._peak, _rss_bytes())

    def stop(self) -> dict[str, float]:
        """The run's memory metrics (see LABELS); ``peak_mem_bytes`` is the headline one."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            allocated = torch.cuda.max_memory_allocated(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device)
            return {
                "cuda_peak_allocated_bytes": allocated,
                "cuda_peak_reserved_bytes": reserved,
                "peak_mem_bytes": allocated,
            }
        if self._exact:
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            self._done.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _rss_bytes())
        growth = max(0, peak - self._rss0)
        if self.device.type != "cpu":  # mps: RSS does not see the device's memory
            return {"rss_growth_bytes": growth}
        return {"rss_growth_bytes": growth, "peak_mem_bytes": growth}

    def label(self) -> str:
        """What ``peak_mem_bytes`` means on this device (for the manifest)."""
        key = "cuda_peak_allocated_bytes" if self.device.type == "cuda" else "rss_growth_bytes"
        return LABELS[key]
