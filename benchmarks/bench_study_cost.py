"""Study cost: one lr-grid study run in full and by successive halving, in one invocation.

The study: 3 learning rates x 4 placements (the default study's) x 3 seeds on the built-in
benchmark (tiny-markov adapting to markov-mix), with selection on validation loss. The
full arm trains every run to the end; the pruned arm adds ``prune: halving`` (2 rungs,
reduction 3: every setting is judged after 1/9 and 1/3 of the steps, and the best third
of each placement's settings continues). Both arms share one process and its loaded
model and data, and run one after the other, so the ratio compares like with like.

It prints each placement's selected learning rate in both arms and the wall times, and
ends with two lines:

    ratio: X.XX        full-grid wall time / pruned wall time
    agreement: N/M     placements whose selection is the same in both arms, or whose two
                       selected settings the full grid calls within noise (paired t-test
                       over seeds of their validation losses, p >= 0.05)

    python benchmarks/bench_study_cost.py --quick    # 36 steps x batch 16, 64 eval blocks
    python benchmarks/bench_study_cost.py            # the default study's 120 x 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

LRS = [5e-4, 2e-3, 8e-3]
PLACEMENTS = ["seed-full", "seed-attention", "seed-ffn", "attention"]
SEEDS = [0, 1, 2]


def study_config(out: Path, args, prune: bool) -> dict:
    select: dict = {"by": "eval_loss"}
    if prune:
        select.update(prune="halving", rungs=2, reduction=3)
    return {
        "name": "cost-pruned" if prune else "cost-full",
        "model": "tiny-markov",
        "dataset": "markov-mix",
        "retain": None,
        "placements": PLACEMENTS,
        "rank": 8,
        "alpha": 16,
        "seeds": SEEDS,
        "zero_shot": False,
        "select": select,
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "block_size": 128,
            "lr": LRS,
            "warmup_steps": max(1, args.steps // 12),
            "precision": "auto",
            "device": "cpu",
        },
        "eval": {"every": 0, "batch_size": 64, "max_blocks": args.eval_blocks},
        "peak_tflops": 1.0,  # MFU is beside the point here: skip the peak measurement
        "save": "none",
        "out": str(out),
    }


def selections(out: Path) -> tuple[dict[str, float], dict[str, dict[str, dict[int, float]]]]:
    """(placement -> selected lr, placement -> label -> seed -> validation loss) of a store."""
    from loraplace.analysis.read import read_study_data
    from loraplace.analysis.selection import select_settings

    data = read_study_data(out)
    chosen = {s.placement: float(s.chosen.setting["lr"]) for s in select_settings(data)}
    losses: dict[str, dict[str, dict[int, float]]] = {}
    for r in data.runs:
        if r.done and "eval_loss" in r.metrics:
            by_label = losses.setdefault(r.placement_base, {})
            by_label.setdefault(r.placement, {})[r.seed] = r.metrics["eval_loss"]
    return chosen, losses


def agree(placement: str, full_lr: float, pruned_lr: float, losses: dict) -> tuple[bool, str]:
    """Same setting, or the full grid cannot tell the two apart (paired t over seeds)."""
    from loraplace.analysis.stats import paired_test

    if full_lr == pruned_lr:
        return True, "same"
    a, b = f"{placement}@lr{full_lr:g}", f"{placement}@lr{pruned_lr:g}"
    test = paired_test(a, losses[placement][a], b, losses[placement][b])
    if test.p is None or test.p >= 0.05:
        return True, f"within noise in the full grid (p = {test.p})"
    return False, f"differ in the full grid (p = {test.p:.3g})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="36 steps x batch 16, 64 eval blocks")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a shared machine)")
    p.add_argument("--out", type=Path, default=None, help="keep both stores here")
    args = p.parse_args()
    args.steps = args.steps or (36 if args.quick else 120)
    args.batch_size = args.batch_size or 16
    args.eval_blocks = 64 if args.quick else None

    import torch

    torch.set_num_threads(args.threads)
    from loraplace.assets import Assets
    from loraplace.driver import prepare_study, run_study
    from loraplace.study import validate_study

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-study-cost-"))
    full = validate_study(study_config(root / "full", args, prune=False))
    pruned = validate_study(study_config(root / "pruned", args, prune=True))
    assets = Assets()
    prepare_study(full, assets)  # load the model and data once, outside both timings
    print(
        f"{len(LRS)} lrs x {len(PLACEMENTS)} placements x {len(SEEDS)} seeds, "
        f"{args.steps} steps x {args.batch_size} x 128 tokens, {args.threads} thread(s)",
        flush=True,
    )
    seconds = {}
    for name, study in (("full", full), ("pruned", pruned)):
        start = time.perf_counter()
        run_study(study, assets=assets, command="bench_study_cost.py")
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f} s", flush=True)

    full_lr, losses = selections(root / "full")
    pruned_lr, _ = selections(root / "pruned")
    n = 0
    for placement in PLACEMENTS:
        ok, why = agree(placement, full_lr[placement], pruned_lr[placement], losses)
        n += ok
        print(
            f"{placement}: full lr {full_lr[placement]:g}, pruned lr {pruned_lr[placement]:g}"
            f" -> {why}"
        )
    print(f"stores: {root}")
    print(f"ratio: {seconds['full'] / seconds['pruned']:.2f}")
    print(f"agreement: {n}/{len(PLACEMENTS)}")


if __name__ == "__main__":
    main()
