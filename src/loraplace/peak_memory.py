"""What each peak-memory metric of a run measures, in words and as a report column.

A run records ``peak_mem_bytes`` (its headline number) beside the named measure it came
from (``train/memory.py`` takes them). The names live here, free of torch, so the report
can label the column for what it holds: on CPU the growth of RSS during the run, on CUDA
the allocator's ``max_memory_allocated``; never a bare "peak memory".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# metric name -> what it is (recorded in each run's manifest, shown by the report)
LABELS = {
    "cuda_peak_allocated_bytes": "CUDA max_memory_allocated during the run (live tensors, "
    "base weights included)",
    "cuda_peak_reserved_bytes": "CUDA max_memory_reserved during the run (the allocator's pool)",
    "rss_growth_bytes": "CPU: peak RSS during the run minus RSS at its start (the loaded base "
    "model and data excluded)",
}
# the measure behind peak_mem_bytes -> the report's column
COLUMNS = {
    "cuda_peak_allocated_bytes": "CUDA peak alloc (MiB)",
    "rss_growth_bytes": "RSS growth (MiB)",
}
# runs measured in more than one way
MIXED_COLUMN = "Peak mem, mixed measures (MiB)"
# runs all recorded before the measures were named
UNNAMED_COLUMN = "Peak mem, unnamed measure (MiB)"


def headline_measure(metrics: Mapping[str, float]) -> str | None:
    """Which measure a run's ``peak_mem_bytes`` is (None: recorded without a name)."""
    for name in ("cuda_peak_allocated_bytes", "rss_growth_bytes"):  # CUDA first, as memory.py
        if name in metrics:
            return name
    return None


def measure_of(runs_metrics: Iterable[Mapping[str, float]]) -> str | None:
    """The one measure behind these runs' ``peak_mem_bytes``: its name, "mixed" when they
    differ, "unnamed" when recorded before the names, None when no run has the metric."""
    measures = {headline_measure(m) for m in runs_metrics if "peak_mem_bytes" in m}
    if not measures:
        return None
    if len(measures) > 1:
        return "mixed"
    return measures.pop() or "unnamed"


def column_for(runs_metrics: Iterable[Mapping[str, float]]) -> tuple[str, str]:
    """(column header, its note) for the peak memory of these runs."""
    name = measure_of(runs_metrics)
    if name == "unnamed":
        return UNNAMED_COLUMN, (
            "Peak mem: recorded before loraplace named its measures: the process's peak RSS "
            "on CPU (loaded model and earlier runs included), max_memory_allocated on CUDA."
        )
    if name in COLUMNS:
        return COLUMNS[name], f"{COLUMNS[name].removesuffix(' (MiB)')} = {LABELS[name]}."
    return MIXED_COLUMN, (
        "Peak mem: the runs measured it in different ways (CUDA max_memory_allocated, CPU "
        "RSS growth, or the process peak RSS of runs recorded before the measures were "
        "named): compare rows with care."
    )
