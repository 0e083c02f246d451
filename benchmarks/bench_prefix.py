"""Frozen-prefix reuse: time per epoch of a top-half placement, with and without the cache.

LoRA r=16 on c_attn/c_proj/c_fc of the top half of the layers only, so the bottom half
(and the embeddings) are frozen: with prefix reuse their output is computed once per block
in the first epoch and read from memory afterwards. Both arms call loraplace's
``train_run`` in this process, alternating; each cached run starts from an empty cache,
so its first epoch pays for filling it. Reported: the median time of epochs 2..n.

    python benchmarks/bench_prefix.py --quick   # the narrow 12-layer model
    python benchmarks/bench_prefix.py           # GPT-2 small's shape
"""

from __future__ import annotations

import argparse
import sys
import time

import common


def one_run(model, blocks, args, *, cache) -> dict:
    """One top-half run; cache: False (plain), True (a fresh cache) or a PrefixCache."""
    from loraplace.placement import resolve
    from loraplace.runs import RunSpec, TrainSettings
    from loraplace.train import train_run
    from loraplace.train.prefix_cache import PrefixCache

    n_layer = model.config.n_layer
    spec = RunSpec(
        study="bench",
        placement_name="top-half",
        kind="lora",
        model="gpt2",
        dataset="random",
        seed=0,
        train=TrainSettings(
            epochs=args.epochs,
            batch_size=args.batch,
            block_size=args.block,
            lr=2e-4,
            warmup_steps=0,
            schedule="constant",
            precision=args.precision,
            eval_every=0,
            eval_batch_size=args.batch,
            max_eval_blocks=args.batch,
        ),
        modules=resolve(
            "seed-full", model, rank=16, alpha=32, layers=f"last:{n_layer // 2}"
        ).as_dicts(),
    )
    stamps: list[tuple[float, float]] = []  # (wall, process CPU) at each step's end
    losses: list[float] = []

    def on_step(step: int, steps: int, loss: float, tps: float) -> None:
        stamps.append((time.perf_counter(), time.process_time()))
        losses.append(loss)

    t0 = (time.perf_counter(), time.process_time())
    result = train_run(
        spec,
        model,
        blocks,
        on_step=on_step,
        peak_flops=1.0,
        prefix_cache=PrefixCache(max_bytes=8 << 30) if cache is True else cache,
    )
    per_epoch = len(blocks.train) // args.batch
    ends = [t0] + stamps[per_epoch - 1 :: per_epoch]  # the first epoch includes set-up
    return {
        "cache": cache is not False,
        "epoch_s": [b[0] - a[0] for a, b in zip(ends, ends[1:], strict=False)],
        "epoch_cpu_s": [b[1] - a[1] for a, b in zip(ends, ends[1:], strict=False)],
        "losses": losses,
        "eval_loss": result.metrics["eval_loss"],
        "prefix_layers_cached": result.manifest["prefix_layers_cached"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="narrow model (d=256, vocab 8192)")
    p.add_argument("--repeats", type=int, default=2, help="runs per arm")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=32, help="train blocks (one epoch)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from loraplace.data import Blocks

    common.set_threads(args.threads)
    size = common.GPT2_QUICK if args.quick else common.GPT2_SMALL
    mach = common.machine()
    print(f"machine: {common.machine_line(mach, args.threads)}", flush=True)
    print(f"model: {size.describe()}; LoRA on the top {size.n_layer // 2} layers", flush=True)
    model = common.gpt2(size, positions=args.block)
    data = common.random_blocks(args.n_train + args.batch, args.block, size.vocab_size, 7)
    blocks = Blocks(
        name="random",
        train=data[: args.n_train],
        val=data[args.n_train :],
        fingerprint="bench-prefix",
        n_docs=0,
        n_tokens=int(data.numel()),
    )
    from loraplace.train.prefix_cache import PrefixCache

    runs = []
    for r in range(args.repeats):
        for cache in (False, True) if r % 2 == 0 else (True, False):
            res = one_run(model, blocks, args, cache=cache)
            runs.append(res)
            print(
                f"repeat {r + 1} {'cached' if cache else 'plain '}: epochs "
                + ", ".join(f"{t:.2f}" for t in res["epoch_s"])
                + f" s; eval loss {res['eval_loss']:.6f}; load {common.load_average()[0]:.1f}",
                flush=True,
            )
    # Across runs: a second run of the study (another seed would do the same) finds the
    # cache filled by the first, so even its first epoch skips the prefix.
    shared = PrefixCache(max_bytes=8 << 30)
    one_run(model, blocks, args, cache=shared)
    reuse = one_run(model, blocks, args, cache=shared)
    print(
        "second run on a filled cache: epochs " + ", ".join(f"{t:.2f}" for t in reuse["epoch_s"]),
        flush=True,
    )
    later = {c: [t for r in runs if r["cache"] == c for t in r["epoch_s"][1:]] for c in (0, 1)}
    first = {c: [r["epoch_s"][0] for r in runs if r["cache"] == c] for c in (0, 1)}
    plain, cached = common.median(later[0]), common.median(later[1])
    later_cpu = {
        c: [t for r in runs if r["cache"] == c for t in r["epoch_cpu_s"][1:]] for c in (0, 1)
    }
    plain_cpu, cached_cpu = common.median(later_cpu[0]), common.median(later_cpu[1])
    loss_diff = max(
        abs(a - b)
        for x in runs
        for y in runs
        if x["cache"] and not y["cache"]
        for a, b in zip(x["losses"], y["losses"], strict=True)
    )
    report = {
        "command": "python benchmarks/bench_prefix.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": mach,
        "load_average_end": common.load_average(),
        "args": vars(args),
        "model": size.describe(),
        "epoch_s_later": {"plain": plain, "cached": cached},
        "epoch_s_first": {"plain": common.median(first[0]), "cached": common.median(first[1])},
        "ratio": plain / cached,
        "epoch_s_first_on_filled_cache": reuse["epoch_s"][0],
        "epoch_cpu_s_later": {"plain": plain_cpu, "cached": cached_cpu},
        "ratio_cpu": plain_cpu / cached_cpu,
        "train_loss_max_abs_diff": loss_diff,
        "runs": runs,
    }
    a = args
    md = "\n".join(
        [
            f"### Frozen-prefix reuse, top-half placement ({'--quick' if a.quick else 'full'})",
            "",
            f"`{report['command']}` ({report['date']})",
            "",
            f"- Machine: {common.machine_line(mach, a.threads)}",
            f"- Model: {size.describe()}; LoRA r=16 on c_attn/c_proj/c_fc of layers "
            f"{size.n_layer // 2}-{size.n_layer - 1}; {a.n_train} blocks of {a.block} per epoch, "
            f"batch {a.batch}, {a.epochs} epochs, {a.precision}; {a.repeats} runs per arm, "
            "alternating, each cached run starting from an empty cache",
            "",
            "| arm | first epoch (s) | later epochs (s, median) | later epochs (CPU-s) |",
            "| --- | ---: | ---: | ---: |",
            f"| plain | {report['epoch_s_first']['plain']:.2f} | {plain:.2f} | {plain_cpu:.2f} |",
            f"| prefix reuse | {report['epoch_s_first']['cached']:.2f} | {cached:.2f} "
            f"| {cached_cpu:.2f} |",
            f"| prefix reuse, a later run of the study (cache already filled) "
            f"| {reuse['epoch_s'][0]:.2f} | | |",
            "",
            f"**Later epochs {report['ratio']:.2f}x faster with prefix reuse** "
            f"({report['ratio_cpu']:.2f}x in CPU time); largest train-loss "
            f"difference between the arms {loss_diff:.1e}.",
        ]
    )
    name = "bench_prefix_quick" if a.quick else "bench_prefix"
    path = common.save_json(name, report)
    common.update_results_md(name, md)
    print(f"wrote {path} and {common.RESULTS_MD}")
    print(f"CPU-time ratio: {report['ratio_cpu']:.2f}")
    print(f"ratio: {report['ratio']:.2f}")


if __name__ == "__main__":
    main()
