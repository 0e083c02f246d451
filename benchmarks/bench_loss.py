"""Next-token loss: torch's cross-entropy against loraplace's one-pass backward.

The per-token NLL of a language-model step over GPT-2's 50,257-token vocabulary, forward
and backward, from fixed logits: ``torch.nn.functional.cross_entropy(reduction="none")``
against ``loraplace.train.kernels.next_token_nll`` (same forward kernels; its backward
writes softmax * g - onehot * g over the saved log-probs in place instead of a zero-filled
[N, V] buffer, a scatter and log_softmax's backward). Arms alternate; medians reported,
with the largest gradient difference.

    python benchmarks/bench_loss.py            # N = 8 x 127 tokens, V = 50257, 2 threads
"""

from __future__ import annotations

import argparse
import statistics
import time

import common
import torch
import torch.nn.functional as F


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8 * 127, help="rows N of the logits")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--repeats", type=int, default=15, help="timed fwd+bwd per arm")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    common.set_threads(args.threads)
    from loraplace.train.kernels import next_token_nll

    torch.manual_seed(0)
    base = torch.randn(args.tokens, args.vocab) * 2
    targets = torch.randint(0, args.vocab, (args.tokens,))
    arms = {
        "torch cross_entropy": lambda x: F.cross_entropy(x, targets, reduction="none"),
        "loraplace next_token_nll": lambda x: next_token_nll(x, targets),
    }

    def once(fn):
        x = base.clone().requires_grad_(True)
        t0 = time.perf_counter()
        fn(x).mean().backward()
        return time.perf_counter() - t0, x.grad

    times: dict[str, list[float]] = {k: [] for k in arms}
    for fn in arms.values():  # warm-up, untimed
        once(fn)
    for _ in range(args.repeats):
        for name, fn in arms.items():
            times[name].append(once(fn)[0])
    grads = [once(fn)[1] for fn in arms.values()]
    diff = float((grads[0] - grads[1]).abs().max())
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["torch cross_entropy"] / med["loraplace next_token_nll"]
    report = common.timing_report("bench_loss.py", args, times, ratio=ratio, max_grad_diff=diff)
    mach = report["machine"]
    md = "\n".join(
        [
            "### Next-token loss, forward + backward: torch vs loraplace",
            "",
            f"`{report['command']}` ({report['date']})",
            "",
            f"- Machine: {common.machine_line(mach, args.threads)}",
            f"- Logits {args.tokens} x {args.vocab} fp32, mean NLL, {args.repeats} timed "
            "repeats per arm, alternating",
            "",
            *common.arm_table(times, "ms", 1e3),
            "",
            f"**{ratio:.2f}x faster**; largest gradient difference {diff:.1e}.",
        ]
    )
    common.publish("bench_loss", report, md)
    for k in arms:
        print(f"{k}: {1e3 * med[k]:.1f} ms (median)")
    print(f"max |grad difference|: {diff:.1e}")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
