"""Per-run benchmark: the same LoRA training through HF Trainer + PEFT and through loraplace.

Both arms train the same model (GPT-2 shape, random init, dropout off) with LoRA r=16,
alpha=32 on c_attn/c_proj/c_fc, on the same batches in the same order (batch 8 x 128),
constant learning rate 2e-4, AdamW, gradient clipping 1.0, at the same precision. Each
arm runs in a fresh process (so peak memory and process-wide settings are its own), and
the arms alternate over repeats; medians are reported. The first step of each run is a
warm-up and is not timed. MFU counts every matmul weight including the tied lm_head,
against a 2048^3 matmul peak measured here at the start and at the end.

    python benchmarks/bench_trainer.py --quick            # under 5 minutes on 2 cores
    python benchmarks/bench_trainer.py --precision both   # GPT-2 small, fp32 and bf16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common

LR = 2e-4  # constant: both arms' schedules agree exactly (no warm-up convention to match)
RANK, ALPHA = 16, 32
TARGETS = ["c_attn", "c_proj", "c_fc"]
N_VAL = 8


def _data(size: common.ModelSize, n_train: int, block: int):
    data = common.random_blocks(n_train + N_VAL, block, size.vocab_size, seed=1234)
    return data[:n_train], data[n_train:]


# ---------------------------------------------------------------------------------- arms
def arm_loraplace(args, size: common.ModelSize) -> dict:
    """loraplace's runner: ``train_run`` called directly, as its executors call it."""
    from loraplace.data import Blocks
    from loraplace.placement import resolve
    from loraplace.runs import RunSpec, TrainSettings
    from loraplace.train import train_run

    model = common.gpt2(size, positions=args.block, attn=args.attn)
    train, val = _data(size, args.n_train, args.block)
    blocks = Blocks(
        name="random",
        train=train,
        val=val,
        fingerprint=f"bench-random-{size.name}-{args.n_train}",
        n_docs=0,
        n_tokens=int(train.numel() + val.numel()),
    )
    spec = RunSpec(
        study="bench",
        placement_name="seed-full",
        kind="lora",
        model=f"gpt2-{size.name}",
        dataset="random",
        seed=0,
        train=TrainSettings(
            steps=args.steps,
            batch_size=args.batch,
            block_size=args.block,
            lr=LR,
            schedule="constant",
            warmup_steps=0,
            weight_decay=0.0,
            grad_clip=1.0,
            lora_dropout=0.0,
            precision=args.precision,
            eval_every=0,
            eval_batch_size=N_VAL,
            max_eval_blocks=N_VAL,
        ),
        modules=resolve("+".join(TARGETS), model, rank=RANK, alpha=ALPHA).as_dicts(),
    )
    stamps: list[tuple[float, float]] = []  # (wall, process CPU) at the end of each step
    losses: list[float] = []

    def on_step(step: int, steps: int, loss: float, tps: float) -> None:
        stamps.append((time.perf_counter(), time.process_time()))
        losses.append(loss)

    result = train_run(spec, model, blocks, on_step=on_step, peak_flops=1.0)
    # "flagged": every step ran, but the eval loss ended above zero-shot, which a few steps
    # on random tokens may do by chance (4 steps did); the timing stands
    if result.status not in ("done", "flagged"):
        raise RuntimeError(f"loraplace run {result.status}: {result.error}")
    return {"stamps": stamps, "losses": losses}


def arm_trainer(args, size: common.ModelSize) -> dict:
    """HF Trainer + PEFT, as a user would write it, fed the same batches in the same order."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import Dataset, SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    model = common.gpt2(size, positions=args.block, attn=args.attn)
    train, _ = _data(size, args.n_train, args.block)
    torch.manual_seed(0)  # the adapter init: the same draw as loraplace's (seed 0)
    config = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, fan_in_fan_out=True
    )
    net = get_peft_model(model, config)
    rows = [i for b in common.batch_order(args.n_train, args.batch, args.steps, 0) for i in b]

    class Rows(Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict:
            x = train[rows[i]]
            return {"input_ids": x, "labels": x}

    class InOrder(Trainer):  # the rows are already in loraplace's batch order
        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(self.train_dataset)

    stamps: list[tuple[float, float]] = []  # (wall, process CPU) at the end of each step
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append((time.perf_counter(), time.process_time()))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            **common.hf_training_args(
                out,
                batch=args.batch,
                steps=args.steps,
                lr=LR,
                seed=0,
                optim="adamw_torch",
                logging_steps=1,  # loraplace also reads the loss every step
                bf16=args.precision == "bf16",
                dataloader_num_workers=0,
            )
        )
        trainer = InOrder(
            model=net,
            args=targs,
            train_dataset=Rows(),
            data_collator=default_data_collator,
            callbacks=[Clock()],
        )
        trainer.train()
    return {"stamps": stamps, "losses": losses}


def worker(args) -> dict:
    common.set_threads(args.threads)
    size = common.GPT2_QUICK if args.quick else common.GPT2_SMALL
    # The peak again in every worker: the best of all measurements is the least disturbed.
    peaks = {p: common.matmul_peak_gflops(p) for p in ("fp32", "bf16")}
    t0 = time.perf_counter()
    out = (arm_loraplace if args.worker == "loraplace" else arm_trainer)(args, size)
    stamps = out.pop("stamps")
    w = args.warmup
    tokens = (len(stamps) - w) * args.batch * args.block
    return {
        **out,
        "arm": args.worker,
        "precision": args.precision,
        "tokens_per_s": tokens / (stamps[-1][0] - stamps[w - 1][0]),
        # per second of this process's CPU time: less sensitive to other processes' load
        # (with one thread; with more, threads waiting at a barrier also burn CPU time)
        "tokens_per_cpu_s": tokens / (stamps[-1][1] - stamps[w - 1][1]),
        "step_s": [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)],
        "peak_rss_bytes": common.peak_rss_bytes(),
        "wall_s": time.perf_counter() - t0,
        "peak_gflops": peaks,
    }


# -------------------------------------------------------------------------------- parent
def flops_per_token(size: common.ModelSize, args) -> float:
    """loraplace's count (4N + attention + 2 x adapters; N includes the tied lm_head)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from loraplace.train.measure import flops_per_token as fpt

    model = common.gpt2(size, positions=args.block, attn=args.attn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS))
    return fpt(net, args.block)


def worker_argv(args, arm: str, precision: str) -> list[str]:
    argv = [str(Path(__file__).resolve()), "--worker", arm, "--precision", precision]
    argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--batch", str(args.batch), "--block", str(args.block)]
    argv += ["--threads", str(args.threads), "--attn", args.attn, "--n-train", str(args.n_train)]
    return argv + (["--quick"] if args.quick else [])


def summarise(runs: list[dict], fpt: float, peak_gflops: float, block: int) -> dict:
    by = {a: [r for r in runs if r["arm"] == a] for a in ("trainer", "loraplace")}
    tps = {a: common.median([r["tokens_per_s"] for r in rs]) for a, rs in by.items()}
    cpu = {a: common.median([r["tokens_per_cpu_s"] for r in rs]) for a, rs in by.items()}
    best = {a: max(r["tokens_per_s"] for r in rs) for a, rs in by.items()}
    paired = [
        lp["tokens_per_s"] / tr["tokens_per_s"]
        for tr, lp in zip(by["trainer"], by["loraplace"], strict=False)
    ]
    # HF Trainer divides the summed loss by every label, including the first position that
    # the shift leaves unscored (block_size per row, not block_size - 1): rescale to compare.
    scale = block / (block - 1)
    first_tr = [x * scale for x in by["trainer"][0]["losses"]]
    first_lp = by["loraplace"][0]["losses"]
    return {
        "tokens_per_s": tps,
        "ratio": tps["loraplace"] / tps["trainer"],
        "ratio_paired_median": common.median(paired),
        "tokens_per_cpu_s": cpu,
        "tokens_per_s_best": best,
        "ratio_best": best["loraplace"] / best["trainer"],
        "ratio_cpu": cpu["loraplace"] / cpu["trainer"],
        "mfu": {a: fpt * tps[a] / (peak_gflops * 1e9) for a in tps},
        # MFU while the process runs: tokens per CPU-second (meaningful at one thread)
        "mfu_cpu": {a: fpt * cpu[a] / (peak_gflops * 1e9) for a in cpu},
        "peak_rss_bytes": {a: max(r["peak_rss_bytes"] for r in rs) for a, rs in by.items()},
        "loss_first_step": {"trainer": first_tr[0], "loraplace": first_lp[0]},
        "trainer_loss_rescaled_by": scale,
        "loss_max_abs_diff": max(abs(a - b) for a, b in zip(first_tr, first_lp, strict=False)),
    }


def markdown(report: dict) -> str:
    a, peak = report["args"], report["peak_gflops"]
    lines = [
        f"### Per-run: HF Trainer + PEFT vs loraplace ({'--quick' if a['quick'] else 'full'})",
        "",
        f"`{report['command']}` ({report['date']})",
        "",
        f"- Machine: {common.machine_line(report['machine'], a['threads'])}",
        f"- Model: {report['model']}; LoRA r={RANK}, alpha={ALPHA} on {', '.join(TARGETS)}; "
        f"batch {a['batch']} x {a['block']}; {a['steps']} steps ({a['warmup']} untimed), "
        f"{a['repeats']} repeats per arm, alternating; attention {a['attn']}",
        "- Matmul peak (2048^3, best of all measurements, one per process): "
        f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s; "
        f"{report['flops_per_token'] / 1e6:.1f} MFLOP per training token",
        "",
        "| precision | arm | tokens/s (median) | tokens/s (best) | MFU (median) "
        "| tokens per CPU-s | MFU by CPU time | peak RSS | ratio loraplace/Trainer "
        "| first-step loss |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for prec, s in report["results"].items():
        for arm in ("trainer", "loraplace"):
            ratio = (
                f"{s['ratio']:.2f} (paired {s['ratio_paired_median']:.2f}; best-of "
                f"{s['ratio_best']:.2f}; CPU time {s['ratio_cpu']:.2f})"
            )
            lines.append(
                f"| {prec} | {arm} | {s['tokens_per_s'][arm]:.0f} "
                f"| {s['tokens_per_s_best'][arm]:.0f} | {100 * s['mfu'][arm]:.1f} % "
                f"| {s['tokens_per_cpu_s'][arm]:.0f} | {100 * s['mfu_cpu'][arm]:.1f} % "
                f"| {common.fmt_bytes(s['peak_rss_bytes'][arm])} "
                f"| {ratio if arm == 'loraplace' else ''} "
                f"| {s['loss_first_step'][arm]:.5f} |"
            )
    for prec, s in report["results"].items():
        if max(s["ratio"], s["ratio_best"]) / min(s["ratio"], s["ratio_best"]) > 1.15:
            lines += [
                "",
                f"**{prec}: the median ratio ({s['ratio']:.2f}) disagrees with the best-of-repeats"
                f" ratio ({s['ratio_best']:.2f}) by more than 15 %: the load changed between "
                f"runs. The CPU-time ratio ({s['ratio_cpu']:.2f}) is the steadier figure.**",
            ]
    lines.append("")
    lines.append(
        "Max |loss difference| between the arms over the steps of the first repeat (Trainer "
        "losses rescaled by L/(L-1): it divides by every label, including the unscored first): "
        + ", ".join(f"{p} {s['loss_max_abs_diff']:.2e}" for p, s in report["results"].items())
    )
    return "\n".join(lines)


def parent(args) -> None:
    import sys

    common.set_threads(args.threads)
    size = common.GPT2_QUICK if args.quick else common.GPT2_SMALL
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    mach = common.machine()
    print(f"machine: {common.machine_line(mach, args.threads)}", flush=True)
    if args.quick:
        print("--quick: a narrower model (d=256, vocab 8192) and fewer steps", flush=True)
    print(f"model: {size.describe()}", flush=True)
    peaks = {p: common.matmul_peak_gflops(p) for p in ("fp32", "bf16")}
    print(f"matmul peak at start: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s")
    fpt = flops_per_token(size, args)
    runs: dict[str, list[dict]] = {p: [] for p in precisions}
    for prec in precisions:
        for r in range(args.repeats):
            order = ["trainer", "loraplace"] if r % 2 == 0 else ["loraplace", "trainer"]
            for arm in order:
                res = common.run_worker(worker_argv(args, arm, prec))
                runs[prec].append(res)
                print(
                    f"{prec} repeat {r + 1}/{args.repeats} {arm:9s}: "
                    f"{res['tokens_per_s']:7.1f} tokens/s "
                    f"({res['tokens_per_cpu_s']:7.1f} per CPU-s), loss {res['losses'][0]:.5f} -> "
                    f"{res['losses'][-1]:.5f}, peak RSS {common.fmt_bytes(res['peak_rss_bytes'])}"
                    f", load {common.load_average()[0]:.1f}",
                    flush=True,
                )
    end = {p: common.matmul_peak_gflops(p) for p in ("fp32", "bf16")}
    print(f"matmul peak at end:   fp32 {end['fp32']:.0f}, bf16 {end['bf16']:.0f} GFLOP/s")
    report = {
        "command": "python benchmarks/bench_trainer.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": mach,
        "load_average_end": common.load_average(),
        "args": vars(args),
        "model": size.describe(),
        "peak_gflops_start_end": {"start": peaks, "end": end},
        "flops_per_token": fpt,
        "runs": runs,
    }
    finish(report)


def finish(report: dict) -> None:
    """Summarise the runs of a report, save it, update RESULTS.md and print the ratios."""
    runs, block = report["runs"], report["args"]["block"]
    every = [*report["peak_gflops_start_end"].values()]
    every += [r["peak_gflops"] for rs in runs.values() for r in rs]
    peaks = {p: max(m[p] for m in every) for p in ("fp32", "bf16")}
    print(
        f"matmul peak, best of every measurement: fp32 {peaks['fp32']:.0f}, bf16 "
        f"{peaks['bf16']:.0f} GFLOP/s"
    )
    fpt = report["flops_per_token"]
    results = {p: summarise(rs, fpt, peaks[p], block) for p, rs in runs.items()}
    report.update(peak_gflops=peaks, results=results)
    name = "bench_trainer_quick" if report["args"]["quick"] else "bench_trainer"
    path = common.save_json(name, report)
    common.update_results_md(name, markdown(report))
    print(f"wrote {path} and {common.RESULTS_MD}")
    for prec, s in results.items():
        print(
            f"{prec}: Trainer {s['tokens_per_s']['trainer']:.1f} tokens/s "
            f"(MFU {100 * s['mfu']['trainer']:.1f} %), loraplace "
            f"{s['tokens_per_s']['loraplace']:.1f} tokens/s "
            f"(MFU {100 * s['mfu']['loraplace']:.1f} %)"
            f", ratio {s['ratio']:.2f}, paired {s['ratio_paired_median']:.2f}, "
            f"best-of {s['ratio_best']:.2f}, CPU time {s['ratio_cpu']:.2f}; peak RSS "
            f"{common.fmt_bytes(s['peak_rss_bytes']['trainer'])} vs "
            f"{common.fmt_bytes(s['peak_rss_bytes']['loraplace'])}"
        )
    head = results[next(iter(results))]
    spread = max(head["ratio_best"], head["ratio_cpu"]) / min(head["ratio_best"], head["ratio_cpu"])
    if max(head["ratio"], head["ratio_best"]) / min(head["ratio"], head["ratio_best"]) > 1.15:
        print(
            "warning: the median ratio disagrees with the best-of-repeats ratio by more than "
            "15 %: the machine's load changed between runs; prefer the best-of and CPU-time "
            f"ratios (they agree within {100 * (spread - 1):.0f} %) or rerun on a quieter machine"
        )
    print(f"ratio: {head['ratio']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="narrower model, 4 steps, 2 repeats")
    p.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None)
    p.add_argument("--repeats", type=int, default=None, help="runs per arm and precision")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="leading steps not timed")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=128)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in every process (default 2; --quick: 1, steady on a shared host)",
    )
    p.add_argument("--attn", default="sdpa", help="attention implementation (both arms)")
    p.add_argument("--n-train", type=int, default=None, help="train blocks (default: one pass)")
    p.add_argument("--render", metavar="JSON", help="re-summarise a saved result, run nothing")
    p.add_argument("--worker", choices=["trainer", "loraplace"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.render:
        import json

        finish(json.loads(Path(args.render).read_text()))
        return
    if args.precision is None:
        args.precision = "fp32" if args.quick or args.worker else "both"
    # --quick: 2 repeats of 4 steps, under 5 minutes on 2 cores (3 x 6 ran past 15 min
    # at 2 threads on a shared host)
    args.threads = args.threads or (1 if args.quick else 2)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.steps = args.steps or (4 if args.quick else 8)
    args.n_train = args.n_train or args.steps * args.batch
    if args.worker:
        common.emit(worker(args))
    else:
        parent(args)


if __name__ == "__main__":
    main()
