"""exact_match decoding: batched, left-padded greedy generation against one prompt at a time.

A random tiny LLaMA-config model (RoPE, so position ids must follow the left padding) over
a word-level vocabulary, and 200 prompts of 4 to 40 tokens. Both arms call
``loraplace.train.task_metrics.greedy_answers`` (transformers' ``generate``, greedy, KV cache):
one with ``batch_size=1``, one with the task default of 64 prompts a call (sorted by
length, left-padded, with an attention mask). Arms alternate in one process; medians
reported, and the answers of the two arms must be identical.

    python benchmarks/bench_exact_match.py            # 200 prompts, 16 new tokens, 3 repeats
    python benchmarks/bench_exact_match.py --quick    # 1 repeat
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import common
import torch


def tiny_llama(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def word_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<eos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def prompts(n: int, vocab: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "prompt_ids": [rng.randrange(2, vocab) for _ in range(rng.randint(4, 40))],
            "reference": "w2",
            "choices": [],
        }
        for _ in range(n)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per arm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1 repeat")
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    common.set_threads(args.threads)
    from loraplace.train.task_metrics import TaskMetricSettings, greedy_answers

    model, tok = tiny_llama(args.vocab), word_tokenizer(args.vocab)
    examples = prompts(args.prompts, args.vocab)
    arms = {
        "one by one": TaskMetricSettings(name="em", max_new_tokens=args.new_tokens, batch_size=1),
        "batched (64)": TaskMetricSettings(name="em", max_new_tokens=args.new_tokens),
    }
    times: dict[str, list[float]] = {k: [] for k in arms}
    answers: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, task in arms.items():
            t0 = time.perf_counter()
            answers[name] = greedy_answers(model, tok, examples, task, "cpu")
            times[name].append(time.perf_counter() - t0)
    same = answers["one by one"] == answers["batched (64)"]
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["one by one"] / med["batched (64)"]
    report = common.timing_report(
        "bench_exact_match.py", args, times, ratio=ratio, identical_answers=same
    )
    mach = report["machine"]
    md = "\n".join(
        [
            "### exact_match decoding: batched vs one prompt at a time",
            "",
            f"`{report['command']}` ({report['date']})",
            "",
            f"- Machine: {common.machine_line(mach, args.threads)}",
            f"- Random LLaMA-config model (4 layers, d=128, GQA 4/2, vocab {args.vocab}); "
            f"{args.prompts} prompts of 4-40 tokens, {args.new_tokens} new tokens, greedy, "
            f"KV cache; {args.repeats} timed passes per arm, alternating",
            "",
            *common.arm_table(times),
            "",
            f"**{ratio:.1f}x faster**; identical answers: {same}.",
        ]
    )
    common.publish("bench_exact_match", report, md)
    for k in arms:
        print(f"{k}: {med[k]:.2f} s (median)")
    print(f"identical answers: {same}")
    print(f"ratio: {ratio:.2f}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
