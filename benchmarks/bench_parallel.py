"""The default study's runs at 1 and 2 torch threads, and 2 runs side by side in processes.

On a 2-core CPU without native bf16 the main job (12 runs + zero-shot of the built-in d=128
GPT-2) runs in fp32, and its matrices are small: a second thread speeds one run up by far
less than 2x. This measures, with ``precision: fp32`` forced:

- one run of the default study (its first LoRA spec) at 1 thread and at 2 threads,
  in this process on warm assets, arms alternating: ``2 x t(2 threads) / t(1 thread)`` is
  what two 1-thread runs side by side would gain over one 2-thread run if they did not
  slow each other down;
- with ``--parallel N``: the first N LoRA specs run sequentially at 2 threads against
  ``PoolExecutor`` (2 worker processes x 1 thread; their start-up, model load and
  zero-shot evaluation included), arms alternating.

    python benchmarks/bench_parallel.py                 # 2 repeats of each single-run arm
    python benchmarks/bench_parallel.py --parallel 4    # and 4 runs, sequential vs 2 x 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import common
import torch


def default_specs(out: str, steps: int | None):
    """The default study's LoRA specs at fp32, with their warm assets."""
    from loraplace.assets import Assets
    from loraplace.defaults import default_study_config
    from loraplace.driver import prepare_study
    from loraplace.study import validate_study

    cfg = default_study_config()
    cfg["train"]["precision"] = "fp32"
    if steps:
        cfg["train"]["steps"] = steps
    cfg["out"] = out
    study = validate_study(cfg)
    assets = Assets()
    specs = [s for s in prepare_study(study, assets).specs if s.kind == "lora"]
    return specs, assets


def timed(name: str, fn) -> float:
    """Seconds of fn(), printed as they come (a busy host makes a long benchmark)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"{name}: {dt:.1f} s", flush=True)
    return dt


def single_run_arms(specs, assets, repeats: int) -> dict[str, list[float]]:
    """One run at 1 and at 2 threads, alternating; the first run of each warms up."""
    from loraplace.executors.local import LocalExecutor

    ex = LocalExecutor(assets, keep_adapters=False)
    times: dict[str, list[float]] = {"1 run, 1 thread": [], "1 run, 2 threads": []}
    ex.run_one(specs[0])  # model, blocks and the zero-shot baseline, loaded once
    for _ in range(repeats):
        for name, threads in (("1 run, 1 thread", 1), ("1 run, 2 threads", 2)):
            torch.set_num_threads(threads)
            times[name].append(timed(name, lambda: ex.run_one(specs[0])))
    return times


def parallel_arms(specs, assets, n: int, repeats: int) -> dict[str, list[float]]:
    """N runs: sequential at 2 threads vs 2 worker processes of 1 thread, alternating."""
    from loraplace.executors.local import LocalExecutor
    from loraplace.executors.pool import PoolExecutor

    seq = LocalExecutor(assets, keep_adapters=False)
    par = PoolExecutor(2, threads=1, keep_adapters=False)
    times: dict[str, list[float]] = {f"{n} runs, 1 x 2 threads": [], f"{n} runs, 2 x 1": []}
    for _ in range(repeats):
        torch.set_num_threads(2)
        for name, ex in ((f"{n} runs, 1 x 2 threads", seq), (f"{n} runs, 2 x 1", par)):
            times[name].append(timed(name, lambda ex=ex: ex.run(specs[:n], print_loss)))
    return times


def print_loss(r) -> None:
    print(f"  {r.run_id[:8]} {r.status} eval_loss {r.metrics.get('eval_loss')!r}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="timed passes per arm")
    p.add_argument("--parallel", type=int, default=0, help="also time N runs, 2 x 1 thread")
    p.add_argument("--steps", type=int, default=None, help="override the study's 120 steps")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as out:
        specs, assets = default_specs(out, args.steps)
        times = single_run_arms(specs, assets, args.repeats)
        if args.parallel:
            times.update(parallel_arms(specs, assets, args.parallel, args.repeats))
    med = {k: statistics.median(v) for k, v in times.items()}
    gain = 2 * med["1 run, 2 threads"] / med["1 run, 1 thread"]
    report = common.timing_report("bench_parallel.py", args, times, predicted_gain=gain)
    lines = [
        "### The default study at fp32: 1 vs 2 threads per run, and 2 runs side by side",
        "",
        f"`{report['command']}` ({report['date']})",
        "",
        f"- Machine: {common.machine_line(report['machine'], 2)}",
        f"- Default study (tiny-markov, {args.steps or 120} steps, batch 16 x 128), "
        "`precision: fp32`; "
        f"{args.repeats} timed passes per arm, alternating",
        "",
        *common.arm_table(times),
        "",
        f"2 x t(2 threads) / t(1 thread) = **{gain:.2f}** (over 1: two 1-thread runs side "
        "by side beat one 2-thread run, if they do not slow each other down).",
    ]
    if args.parallel:
        n = args.parallel
        ratio = med[f"{n} runs, 1 x 2 threads"] / med[f"{n} runs, 2 x 1"]
        report["ratio"] = ratio
        lines.append(f"Measured on {n} runs: sequential 2-thread / 2 x 1 = **{ratio:.2f}**.")
    common.publish("bench_parallel", report, "\n".join(lines))
    for k, v in med.items():
        print(f"{k}: {v:.1f} s (median)")
    print(f"predicted gain: {gain:.2f}")
    if args.parallel:
        print(f"ratio: {report['ratio']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
