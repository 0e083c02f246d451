"""The peak-memory column is named for the measure the runs took (peak_memory.py)."""

from __future__ import annotations

import pytest

from loraplace.peak_memory import (
    LABELS,
    MIXED_COLUMN,
    UNNAMED_COLUMN,
    column_for,
    headline_measure,
    measure_of,
)

CPU = {"peak_mem_bytes": 5.0, "rss_growth_bytes": 5.0}
CUDA = {"peak_mem_bytes": 7.0, "cuda_peak_allocated_bytes": 7.0, "cuda_peak_reserved_bytes": 9.0}
OLD = {"peak_mem_bytes": 6.0}  # recorded before the measures were named (process peak RSS)


@pytest.mark.parametrize(
    "runs, column",
    [
        ([CPU, CPU], "RSS growth (MiB)"),
        ([CUDA], "CUDA peak alloc (MiB)"),
        ([CPU, CUDA], MIXED_COLUMN),
        ([CPU, OLD], MIXED_COLUMN),
        ([OLD], UNNAMED_COLUMN),
        ([OLD, OLD], UNNAMED_COLUMN),
        ([CPU, {"eval_loss": 1.0}], "RSS growth (MiB)"),  # a run without the metric: no vote
    ],
)
def test_column_is_named_for_the_measure(runs, column):
    got, note = column_for(runs)
    assert got == column
    if column == MIXED_COLUMN:
        assert "different ways" in note
    elif column == UNNAMED_COLUMN:
        assert "before loraplace named its measures" in note
    else:
        measure = headline_measure(runs[0])
        assert measure is not None and note.endswith(LABELS[measure] + ".")


def test_the_meter_labels_its_headline_with_the_same_words():
    import torch

    from loraplace.train.memory import MemoryMeter

    meter = MemoryMeter(torch.device("cpu"))
    meter.start()
    metrics = meter.stop()
    assert headline_measure(metrics) == "rss_growth_bytes"
    assert meter.label() == LABELS["rss_growth_bytes"]
    assert column_for([metrics])[0] == "RSS growth (MiB)"


@pytest.mark.parametrize(
    "runs, measure",
    [
        ([CPU, CPU], "rss_growth_bytes"),
        ([CUDA], "cuda_peak_allocated_bytes"),
        ([CPU, CUDA], "mixed"),
        ([OLD], "unnamed"),
        ([{"eval_loss": 1.0}], None),
    ],
)
def test_measure_of_names_what_the_csv_column_holds(runs, measure):
    assert measure_of(runs) == measure
