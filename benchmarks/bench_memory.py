"""`plan --memory` against measured peaks on the built-in models.

Each configuration runs in a fresh process (so no earlier run's freed memory hides this
one's growth): load the built-in model and its data, train one run with the frozen-prefix
cache off (the cache is memory a study keeps across runs, not a run's), and read the
run's own peak: RSS growth on CPU. Then the same run again, under the estimate's own
counter of live tensor storages on real tensors (``LiveBytes``): its peak is what the
run's tensors hold, and RSS growth minus it is what no tensor holds: pages of torch's code
run for the first time (measured as the growth of file-backed RSS), and heap kept by the C
allocator. Compared with the estimate's
``run_bytes`` (adapter + AdamW + the larger of the traced training-step and eval-batch
peaks).

    python benchmarks/bench_memory.py                 # the table (a few minutes)
    python benchmarks/bench_memory.py --rows 0 5      # some rows of it
    python benchmarks/bench_memory.py --models tiny-markov tiny-python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

RESULT = "RESULT "


@dataclass(frozen=True)
class Row:
    placement: str
    rank: int
    batch: int
    grad_accum: int = 1
    grad_checkpointing: bool = False
    use_dora: bool = False


ROWS = [
    Row("seed-full", 8, 16),
    Row("seed-ffn", 8, 16),
    Row("seed-attention", 16, 16),
    Row("seed-full", 8, 32),
    Row("seed-full", 8, 32, grad_accum=4),
    Row("seed-full", 8, 32, grad_checkpointing=True),
    Row("seed-full", 8, 16, use_dora=True),
]


def worker(model_ref: str, row: Row) -> dict:
    import torch

    from loraplace.assets import Assets
    from loraplace.builtin import BUILTIN_MODELS
    from loraplace.placement import resolve
    from loraplace.runs import RunSpec, TrainSettings
    from loraplace.train import train_run
    from loraplace.train.memory_estimate import LiveBytes, estimate_memory

    torch.set_num_threads(2)
    import peft  # noqa: F401  imported before the run: library code is not the run's memory

    t = TrainSettings(
        steps=6,
        batch_size=row.batch,
        block_size=128,
        grad_accum=row.grad_accum,
        grad_checkpointing=row.grad_checkpointing,
    )
    assets = Assets()
    model, _ = assets.model(model_ref, "cpu")
    dataset = BUILTIN_MODELS[model_ref].datasets[0]
    blocks = assets.blocks(dataset, model=model_ref, block_size=128)
    rp = resolve(row.placement, model, rank=row.rank, use_dora=row.use_dora)
    spec = RunSpec(
        study="mem",
        placement_name=row.placement,
        kind="lora",
        model=model_ref,
        dataset=dataset,
        seed=0,
        train=t,
        modules=rp.as_dicts(),
        use_dora=row.use_dora,
    )
    from loraplace.train.memory import _status_kib

    file0 = _status_kib("RssFile") or 0
    r = train_run(spec, model, blocks, prefix_cache=False, keep_adapter=False)
    # pages of files (torch's code) the run touched for the first time stay resident
    code_pages = ((_status_kib("RssFile") or 0) - file0) * 1024
    # the same run on real tensors, counted as the estimate counts the meta trace
    live = LiveBytes({p.untyped_storage()._cdata for p in model.parameters()})
    with live:
        train_run(spec, model, blocks, prefix_cache=False, keep_adapter=False)
    kw = dict(grad_accum=row.grad_accum, grad_checkpointing=row.grad_checkpointing)
    est = estimate_memory(model.config, rp, batch_size=row.batch, block_size=128, **kw)
    return {
        "model": model_ref,
        **asdict(row),
        "measured_rss_growth": r.metrics["rss_growth_bytes"],
        "measured_tensor_peak": live.peak,
        "measured_code_pages": code_pages,
        "estimate_run_bytes": est.run_bytes,
        "estimate": est.to_json(),
    }


def measure(ref: str, row: Row) -> dict:
    """One row, in a fresh process."""
    # No matmul probe inside the run; and glibc returns every freed block above 64 KiB
    # to the OS at once (its adaptive threshold otherwise keeps freed tensors in the
    # heap, and RSS then counts memory no tensor holds).
    env = dict(os.environ, LORAPLACE_PEAK_TFLOPS="1", MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", ref, json.dumps(asdict(row))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1][len(RESULT) :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny-markov"])
    ap.add_argument("--rows", nargs="+", type=int, help="row numbers (0-based) of ROWS")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        res = worker(args.worker[0], Row(**json.loads(args.worker[1])))
        print(RESULT + json.dumps(res))
        return
    mib = 2**20
    print(
        "| model | placement | batch (accum) | ckpt | measured RSS growth | live tensor peak "
        "| RSS - tensors (file-backed RSS growth, whole run) | estimate | error vs RSS "
        "| error vs tensors |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [ROWS[i] for i in args.rows] if args.rows else ROWS
    for ref in args.models:
        for row in rows:
            res = measure(ref, row)
            got, live, est = (
                res["measured_rss_growth"],
                res["measured_tensor_peak"],
                res["estimate_run_bytes"],
            )
            rest = f"{(got - live) / mib:.1f} MiB ({res['measured_code_pages'] / mib:.1f})"
            name = f"{row.placement}@r{row.rank}" + (",dora" if row.use_dora else "")
            print(
                f"| {ref} | {name} | {row.batch} ({row.grad_accum}) "
                f"| {'on' if row.grad_checkpointing else 'off'} | {got / mib:.1f} MiB "
                f"| {live / mib:.1f} MiB | {rest} | {est / mib:.1f} MiB "
                f"| {100 * (est - got) / got:+.0f} % | {100 * (est - live) / live:+.1f} % |",
                flush=True,
            )


if __name__ == "__main__":
    main()
