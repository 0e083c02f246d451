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
# runs measured in more than one way (or recorded before the measures were named)
MIXED_COLUMN = "Peak mem, mixed measures (MiB)"


def headline_measure(metrics: Mapping[str, float]) -> str | None:
    """Which measure a run's ``peak_mem_bytes`` is (None: recorded without a name)."""
    for name in ("cuda_peak_allocated_bytes", "rss_growth_bytes"):  # CUDA first, as memory.py
        if name in metrics:
            return name
    return None


def column_for(runs_metrics: Iterable[Mapping[str, float]]) -> tuple[str, str]:
    """(column header, its note) for the peak memory of these runs."""
    measures = {headline_measure(m) for m in runs_metrics if "peak_mem_bytes" in m}
    name = measures.pop() if len(measures) == 1 else None
    if name is not None:
        return COLUMNS[name], f"{COLUMNS[name].removesuffix(' (MiB)')} = {LABELS[name]}."
    return MIXED_COLUMN, (
        "Peak mem: the runs measured it in different ways (CUDA max_memory_allocated, CPU "
        "RSS growth, or the process peak RSS of runs recorded before the measures were "
        "named): compare rows with care."
    )
