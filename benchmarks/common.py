"""Helpers shared by the benchmarks: machine description, matmul peak, model, data, output.

Public tools only (torch, transformers, peft); the benchmarks import loraplace only for
the loraplace arm itself.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULT_PREFIX = "RESULT "  # a worker's last stdout line: RESULT {json}


@dataclass(frozen=True)
class ModelSize:
    """A GPT-2 configuration for a benchmark (dropout always off)."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int

    def describe(self) -> str:
        return (
            f"GPT-2 {self.name}: {self.n_layer} layers, d={self.n_embd}, {self.n_head} heads, "
            f"vocab {self.vocab_size}, tied lm_head, random init"
        )


# GPT-2 small's shape with its real vocabulary (50257): the lm_head is ~30 % of the FLOPs.
GPT2_SMALL = ModelSize("small", n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
# --quick: the same depth at a third of the width and a 8k vocabulary (~14x fewer FLOPs).
GPT2_QUICK = ModelSize("quick", n_layer=12, n_embd=256, n_head=4, vocab_size=8192)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def gpt2(size: ModelSize, *, positions: int, attn: str = "sdpa", seed: int = 0):
    """A random-init GPT2LMHeadModel of ``size``, every base weight frozen."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=size.n_layer,
        n_embd=size.n_embd,
        n_head=size.n_head,
        vocab_size=size.vocab_size,
        n_positions=positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_blocks(n: int, block_size: int, vocab: int, seed: int):
    """int64 [n, block_size] of uniform random token ids (throughput does not care)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, block_size), generator=g)


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Rows of each step's batch, by the same rule as loraplace (shuffled epochs).

    Written out here so the Trainer arm feeds exactly the same batches without importing
    loraplace; ``bench_trainer`` checks both arms' first losses agree.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    pos = 0
    out = []
    for _ in range(steps):
        if pos + batch_size > n:
            order = torch.randperm(n, generator=g)
            pos = 0
        out.append(order[pos : pos + batch_size].tolist())
        pos += batch_size
    return out


def hf_training_args(out: str, *, batch: int, steps: int, lr: float, seed: int, **extra) -> dict:
    """The HF ``TrainingArguments`` an arm needs to match loraplace's run: a constant lr with
    no warm-up or weight decay, clip 1.0, on the CPU, nothing saved, logged or evaluated."""
    return dict(
        output_dir=out,
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        **extra,
    )


def matmul_peak_gflops(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n x n matmul in fp32 or bf16."""
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(n, n).to(dt)
    b = torch.randn(n, n).to(dt)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def peak_rss_bytes() -> int:
    """This process's resident-memory high-water mark."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def children_cpu_s() -> float:
    """User + system CPU seconds of every finished child process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine() -> dict:
    """CPU model, cores, bf16 support, memory, package versions, load right now."""
    import peft
    import torch
    import transformers

    cpu, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages / 1024**3, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def run_worker(argv: list[str], timeout: float | None = None) -> dict:
    """Run ``python argv...`` in a fresh process and parse its RESULT line."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(
        f"worker {' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    )


def emit(result: dict) -> None:
    """A worker's answer to its parent (the last line of stdout)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def arm_table(times: dict[str, list[float]], unit: str = "s", scale: float = 1.0) -> list[str]:
    """Markdown rows of each arm's median and best time (seconds x scale, in unit)."""
    fmt = ".1f" if scale != 1.0 else ".2f"
    return [
        f"| arm | median ({unit}) | best ({unit}) |",
        "| --- | ---: | ---: |",
        *(
            f"| {k} | {scale * statistics.median(v):{fmt}} | {scale * min(v):{fmt}} |"
            for k, v in times.items()
        ),
    ]


def timing_report(script: str, args, times: dict[str, list[float]], **extra) -> dict:
    """The JSON of an alternating-arms benchmark: command, date, machine, times, medians."""
    return {
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "args": vars(args),
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "times_s": times,
        **extra,
    }


def publish(name: str, report: dict, markdown: str) -> None:
    """Write a benchmark's JSON under results/ and its block of RESULTS.md."""
    save_json(name, report)
    update_results_md(name, markdown)


def save_json(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def fmt_bytes(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


RESULTS_MD = HERE / "RESULTS.md"


def update_results_md(section: str, markdown: str) -> Path:
    """Replace (or append) the ``section`` block of RESULTS.md, leaving the rest as it is."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS_MD.write_text(text)
    return RESULTS_MD


def machine_line(m: dict, threads: int) -> str:
    """One Markdown line describing the machine a result was measured on."""
    bf16 = "AVX512-BF16" if m["avx512_bf16"] else ("AMX" if m["amx_bf16"] else "no native bf16")
    load = ", ".join(f"{x:.1f}" for x in m["load_average"])
    return (
        f"{m['cpu']}, {m['cores']} cores ({bf16}), {m['memory_gb']} GB; torch {m['torch']}, "
        f"transformers {m['transformers']}, peft {m['peft']}; {threads} torch threads; "
        f"load average at start {load}"
    )
