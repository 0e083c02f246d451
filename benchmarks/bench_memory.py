"""`plan --memory` against measured peaks on the built-in models.

Each configuration runs in a fresh process (so no earlier run's freed memory hides this
one's growth): load the built-in model and its data, train one run with the frozen-prefix
cache off (the cache is memory a study keeps across runs, not a run's), and read the
run's own peak: RSS growth on CPU, max_memory_allocated minus the loaded weights on CUDA.
Compared with the estimate's ``run_bytes`` (adapter + AdamW + the larger of the traced
training-step and eval-batch peaks).

    python benchmarks/bench_memory.py                 # the table (about a minute)
    python benchmarks/bench_memory.py --models tiny-markov tiny-python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

RESULT = "RESULT "
CONFIGS = [  # (placement, rank, batch size, grad_accum, grad checkpointing)
    ("seed-full", 8, 16, 1, False),
    ("seed-ffn", 8, 16, 1, False),
    ("seed-attention", 16, 16, 1, False),
    ("seed-full", 8, 32, 1, False),
    ("seed-full", 8, 32, 4, False),
    ("seed-full", 8, 32, 1, True),
]


def worker(model_ref: str, placement: str, rank: int, batch: int, accum: int, ckpt: bool) -> dict:
    import torch

    from loraplace.assets import Assets
    from loraplace.builtin import BUILTIN_MODELS
    from loraplace.placement import resolve
    from loraplace.runs import RunSpec, TrainSettings
    from loraplace.train import train_run
    from loraplace.train.memory_estimate import estimate_memory

    torch.set_num_threads(2)
    import peft  # noqa: F401  imported before the run: library code is not the run's memory

    t = TrainSettings(
        steps=6, batch_size=batch, block_size=128, grad_accum=accum, grad_checkpointing=ckpt
    )
    assets = Assets()
    model, _ = assets.model(model_ref, "cpu")
    dataset = BUILTIN_MODELS[model_ref].datasets[0]
    blocks = assets.blocks(dataset, model=model_ref, block_size=128)
    rp = resolve(placement, model, rank=rank)
    spec = RunSpec(
        study="mem",
        placement_name=placement,
        kind="lora",
        model=model_ref,
        dataset=dataset,
        seed=0,
        train=t,
        modules=rp.as_dicts(),
    )
    r = train_run(spec, model, blocks, prefix_cache=False, keep_adapter=False)
    est = estimate_memory(
        model.config,
        rp,
        batch_size=batch,
        block_size=128,
        grad_accum=accum,
        grad_checkpointing=ckpt,
    )
    return {
        "model": model_ref,
        "placement": f"{placement}@r{rank}",
        "batch": batch,
        "grad_accum": accum,
        "grad_checkpointing": ckpt,
        "measured_rss_growth": r.metrics["rss_growth_bytes"],
        "estimate_run_bytes": est.run_bytes,
        "estimate": est.to_json(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny-markov"])
    ap.add_argument("--worker", nargs=6)
    args = ap.parse_args()
    if args.worker:
        ref, pl, rank, batch, accum, ckpt = args.worker
        res = worker(ref, pl, int(rank), int(batch), int(accum), ckpt == "1")
        print(RESULT + json.dumps(res))
        return
    mib = 2**20
    print("| model | placement | batch (accum) | ckpt | measured RSS growth | estimate | error |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for ref in args.models:
        for pl, rank, batch, accum, ckpt in CONFIGS:
            argv = [ref, pl, str(rank), str(batch), str(accum), "1" if ckpt else "0"]
            # No matmul probe inside the run; and glibc returns every freed block above 64 KiB
            # to the OS at once (its adaptive threshold otherwise keeps freed tensors in the
            # heap, and RSS then counts memory no tensor holds).
            env = dict(os.environ, LORAPLACE_PEAK_TFLOPS="1", MALLOC_MMAP_THRESHOLD_="65536")
            out = subprocess.run(
                [sys.executable, __file__, "--worker", *argv],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            res = json.loads(out.splitlines()[-1][len(RESULT) :])
            got, est = res["measured_rss_growth"], res["estimate_run_bytes"]
            print(
                f"| {ref} | {res['placement']} | {batch} ({accum}) | {'on' if ckpt else 'off'} "
                f"| {got / mib:.1f} MiB | {est / mib:.1f} MiB | {100 * (est - got) / got:+.0f} % |",
                flush=True,
            )


if __name__ == "__main__":
    main()
