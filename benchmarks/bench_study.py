"""Study-level benchmark: the seed study by ``loraplace run`` vs independent HF Trainer scripts.

The seed study: placements c_attn+c_proj+c_fc, c_attn+c_proj, c_fc (LoRA r=16, alpha=32)
x seeds 0, 1, 2, plus the zero-shot baseline. Arm (a) is one ``loraplace run`` process.
Arm (b) is what a user without loraplace writes: one script per run, each loading the
model, tokenising the text, training with HF Trainer + PEFT and evaluating (9 scripts),
plus one evaluation-only script for the zero-shot loss. The same model, text, block size,
batch, steps, learning rate and precision in both; wall time includes every process start.

The model is loraplace's built-in ``tiny-markov`` (4 layers, d=128, pretrained at first
use, then a plain save_pretrained directory), the text its ``markov-mix`` task written out
as words. Both arms start with cold tokenisation caches. Then the loraplace study runs
again at bf16 to compare each run's eval loss with its fp32 twin.

    python benchmarks/bench_study.py --quick   # 20 steps per run (under 5 min on 2 cores)
    python benchmarks/bench_study.py           # 250 steps per run (loraplace's default)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

PLACEMENTS = {  # the seed study's three, as PEFT target_modules (suffix semantics)
    "seed-full": ["c_attn", "c_proj", "c_fc"],
    "seed-attention": ["c_attn", "c_proj"],
    "seed-ffn": ["c_fc"],
}
SEEDS = [0, 1, 2]
RANK, ALPHA = 16, 32
BLOCK, BATCH, LR, WARMUP = 128, 16, 2e-3, 20


def warmup(steps: int) -> int:
    """Warm-up steps of a run: 20, or half the run when it is shorter (--quick: 20 steps)."""
    return min(WARMUP, steps // 2)


VAL_FRACTION = 0.1


# ------------------------------------------------------------------ (b) one HF script per run
def hf_run(args) -> dict:
    """One independent run as a user script: load, tokenise, (train), evaluate."""
    t0 = time.perf_counter()
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    ids = tok(Path(args.data).read_text())["input_ids"]
    n = len(ids) // BLOCK
    blocks = torch.tensor(ids[: n * BLOCK]).view(n, BLOCK)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_val = max(1, int(n * VAL_FRACTION))
    val, train = blocks[perm[:n_val]], blocks[perm[n_val:]]

    class Rows(torch.utils.data.Dataset):
        def __init__(self, t):
            self.t = t

        def __len__(self):
            return len(self.t)

        def __getitem__(self, i):
            return {"input_ids": self.t[i], "labels": self.t[i]}

    if args.placement != "zero-shot":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(args.seed)
        model = get_peft_model(
            model,
            LoraConfig(
                r=RANK,
                lora_alpha=ALPHA,
                target_modules=PLACEMENTS[args.placement],
                lora_dropout=0.0,
                fan_in_fan_out=True,
            ),
        )
    out = tempfile.mkdtemp(prefix="hf-run-")
    targs = TrainingArguments(
        output_dir=out,
        max_steps=args.steps,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=warmup(args.steps),
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=50,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        bf16=args.precision == "bf16",
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=Rows(train),
        eval_dataset=Rows(val),
        data_collator=default_data_collator,
    )
    t_train = time.perf_counter()
    if args.placement != "zero-shot":
        trainer.train()
    t_eval = time.perf_counter()
    eval_loss = trainer.evaluate()["eval_loss"]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "placement": args.placement,
        "seed": args.seed,
        "eval_loss": eval_loss,
        "train_s": t_eval - t_train,
        "eval_s": time.perf_counter() - t_eval,
        "setup_s": t_train - t0,
    }


# --------------------------------------------------------------------------------- set-up
def prepare(work: Path, n_blocks: int) -> tuple[Path, Path]:
    """The tiny-markov model directory and the markov-mix text (n_blocks lines of words)."""
    from transformers import AutoTokenizer

    from loraplace.builtin import builtin_model_dir
    from loraplace.builtin.markov import markov_blocks

    model_dir = builtin_model_dir("tiny-markov")
    tok = AutoTokenizer.from_pretrained(model_dir)
    blocks = markov_blocks("markov-mix", BLOCK, n_train=n_blocks).train
    lines = [" ".join(tok.convert_ids_to_tokens(row.tolist())) for row in blocks]
    text = work / "markov-mix.txt"
    text.write_text("\n".join(lines) + "\n")
    return model_dir, text


def study_yaml(work: Path, model: Path, data: Path, args, precision: str) -> Path:
    import yaml

    study = {
        "name": f"bench-seed-{precision}",
        "model": str(model),
        "dataset": str(data),
        "retain": None,
        "placements": list(PLACEMENTS),
        "rank": RANK,
        "alpha": ALPHA,
        "seeds": SEEDS,
        "zero_shot": True,
        # With parallel workers each run gets one core; otherwise every core.
        "threads": 1 if args.workers > 1 else args.threads,
        "out": str(work / f"study-{precision}"),
        "train": {
            "steps": args.steps,
            "batch_size": BATCH,
            "block_size": BLOCK,
            "lr": LR,
            "schedule": "cosine",
            "warmup_steps": warmup(args.steps),
            "precision": precision,
        },
        "eval": {"every": 0},  # like the scripts: one evaluation at the end
    }
    path = work / f"study-{precision}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run_loraplace(
    path: Path, work: Path, precision: str, workers: int = 1
) -> tuple[float, dict, dict]:
    """Wall time of ``loraplace run``, {placement/seed: eval_loss} and summed run times."""
    exe = Path(sys.executable).parent / "loraplace"
    cmd = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from loraplace.cli import main; main()"]
    )
    env = dict(os.environ, LORAPLACE_CACHE=str(work / "cache"), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    extra = ["--executor", "ray", "--cpus-per-run", "1"] if workers > 1 else []
    proc = subprocess.run([*cmd, "run", str(path), *extra], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"loraplace run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    db = sqlite3.connect(work / f"study-{precision}" / "loraplace.db")
    losses: dict[str, float] = {}
    for spec_json, value in db.execute(
        "SELECT r.spec_json, m.value FROM runs r JOIN metrics m ON r.run_id = m.run_id "
        "WHERE m.name = 'eval_loss'"
    ):
        spec = json.loads(spec_json)
        losses[f"{spec['placement_name']}/{spec['seed']}"] = value
    times = {
        name: db.execute("SELECT SUM(value) FROM metrics WHERE name = ?", (name,)).fetchone()[0]
        for name in ("train_time_s", "eval_time_s")
    }
    return wall, losses, times


def markdown(report: dict) -> str:
    a = report["args"]
    w, c = report["wall_s"], report["cpu_s"]
    lp_times = report["loraplace_run_times_s"]["fp32"]
    workers = a.get("workers", 1)
    lp_how = f" on Ray, {workers} workers x 1 thread" if workers > 1 else ""
    lp_procs = f"1 + {workers} workers" if workers > 1 else "1"
    lines = [
        f"### Study: seed study by loraplace{lp_how} "
        "vs independent HF Trainer scripts "
        f"({'--quick' if a['quick'] else 'full'})",
        "",
        f"`{report['command']}` ({report['date']})",
        "",
        f"- Machine: {common.machine_line(report['machine'], a['threads'])}",
        f"- Model: tiny-markov (GPT-2, 4 layers, d=128, vocab 71); text: markov-mix, "
        f"{report['n_blocks']} blocks written as words; 3 placements x 3 seeds + zero-shot; "
        f"LoRA r={RANK}, alpha={ALPHA}; {a['steps']} steps of {BATCH} x {BLOCK}, lr {LR} "
        f"cosine, {warmup(a['steps'])} warm-up; fp32",
        "",
        "| arm | processes | wall time (s) | CPU time (s) |",
        "| --- | ---: | ---: | ---: |",
        f"| HF Trainer + PEFT, one script per run | 10 | {w['scripts']:.1f} | {c['scripts']:.1f} |",
        f"| `loraplace run`{lp_how} | {lp_procs} | {w['loraplace_fp32']:.1f} | "
        f"{c['loraplace_fp32']:.1f} |",
        f"| `loraplace run`{lp_how}, bf16 | {lp_procs} | {w['loraplace_bf16']:.1f} | "
        f"{c['loraplace_bf16']:.1f} |",
        "",
        f"**Ratio (scripts / loraplace, fp32): {report['ratio']:.2f}x in wall time, "
        f"{report['ratio_cpu']:.2f}x in CPU time.** "
        f"Scripts: {report['scripts_setup_s']:.1f} s went to imports, loading and tokenising, "
        f"{report['scripts_train_s']:.1f} s to training and {report['scripts_eval_s']:.1f} s "
        f"to evaluation (sums over the 10 processes). loraplace fp32: "
        f"{lp_times['train_time_s']:.1f} s training, {lp_times['eval_time_s']:.1f} s "
        "evaluation, the rest start-up, loading, tokenising and bookkeeping.",
        "",
        *(
            [
                "With Ray workers the loraplace CPU time misses the workers (Ray starts "
                "them, so they are not children of the benchmark): compare wall times.",
                "",
            ]
            if workers > 1
            else []
        ),
        "| run | eval loss, scripts | loraplace fp32 | loraplace bf16 | bf16 vs fp32 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key in sorted(report["eval_loss"]["loraplace_fp32"]):
        s = report["eval_loss"]["scripts"].get(key, float("nan"))
        f32 = report["eval_loss"]["loraplace_fp32"][key]
        b16 = report["eval_loss"]["loraplace_bf16"].get(key, float("nan"))
        lines.append(
            f"| {key} | {s:.4f} | {f32:.4f} | {b16:.4f} | {100 * (b16 / f32 - 1):+.2f} % |"
        )
    lines += [
        "",
        f"Largest bf16-vs-fp32 eval-loss difference: {100 * report['bf16_max_rel_diff']:.2f} %. "
        "The scripts hold out a different random 10 % of blocks than loraplace's split, so "
        "their losses are comparable in size, not equal.",
    ]
    return "\n".join(lines)


def parent(args) -> None:
    mach = common.machine()
    print(f"machine: {common.machine_line(mach, args.threads)}", flush=True)
    n_blocks = 1024 if args.quick else 4096
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        work = Path(tmp)
        model_dir, text = prepare(work, n_blocks)
        print(f"model {model_dir}; text {text} ({n_blocks} blocks)", flush=True)
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}  # CPU seconds of the arm's processes: steadier under load
        inside: dict[str, dict] = {}  # loraplace's own train/eval seconds, from its store
        losses: dict[str, dict[str, float]] = {}

        # (b) one process per run; the zero-shot one only evaluates
        t0, c0 = time.perf_counter(), common.children_cpu_s()
        script_runs = []
        for placement in ["zero-shot", *PLACEMENTS]:
            for seed in [0] if placement == "zero-shot" else SEEDS:
                argv = [str(Path(__file__).resolve()), "--worker", "--placement", placement]
                argv += ["--seed", str(seed), "--steps", str(args.steps)]
                argv += ["--model", str(model_dir), "--data", str(text)]
                argv += ["--threads", str(args.threads), "--precision", "fp32"]
                r = common.run_worker(argv)
                script_runs.append(r)
                print(
                    f"script {placement}/{seed}: eval loss {r['eval_loss']:.4f}, set-up "
                    f"{r['setup_s']:.1f} s, train {r['train_s']:.1f} s, eval {r['eval_s']:.1f} s",
                    flush=True,
                )
        wall["scripts"] = time.perf_counter() - t0
        cpu["scripts"] = common.children_cpu_s() - c0
        losses["scripts"] = {f"{r['placement']}/{r['seed']}": r["eval_loss"] for r in script_runs}
        print(f"scripts: {wall['scripts']:.1f} s ({cpu['scripts']:.1f} CPU-s)", flush=True)

        # (a) one loraplace process for the whole study, then the same at bf16
        for precision in ("fp32", "bf16"):
            path = study_yaml(work, model_dir, text, args, precision)
            c0 = common.children_cpu_s()
            w, lp, times = run_loraplace(path, work, precision, args.workers)
            inside[precision] = times
            wall[f"loraplace_{precision}"] = w
            cpu[f"loraplace_{precision}"] = common.children_cpu_s() - c0
            losses[f"loraplace_{precision}"] = lp
            print(
                f"loraplace {precision}: {w:.1f} s ({cpu[f'loraplace_{precision}']:.1f} CPU-s)",
                flush=True,
            )

    f32, b16 = losses["loraplace_fp32"], losses["loraplace_bf16"]
    rel = [abs(b16[k] / f32[k] - 1) for k in f32 if k in b16 and not k.startswith("zero")]
    report = {
        "command": "python benchmarks/bench_study.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": mach,
        "load_average_end": common.load_average(),
        "args": vars(args),
        "n_blocks": n_blocks,
        "wall_s": wall,
        "ratio": wall["scripts"] / wall["loraplace_fp32"],
        "cpu_s": cpu,
        "loraplace_run_times_s": inside,
        "scripts_train_s": sum(r["train_s"] for r in script_runs),
        "scripts_eval_s": sum(r["eval_s"] for r in script_runs),
        "ratio_cpu": cpu["scripts"] / cpu["loraplace_fp32"],
        "scripts_setup_s": sum(r["setup_s"] for r in script_runs),
        "script_runs": script_runs,
        "eval_loss": losses,
        "bf16_max_rel_diff": max(rel) if rel else float("nan"),
    }
    name = "bench_study_quick" if args.quick else "bench_study"
    if args.workers > 1:  # its own result file and RESULTS.md section
        name += f"_workers{args.workers}"
    path = common.save_json(name, report)
    common.update_results_md(name, markdown(report))
    print(f"wrote {path} and {common.RESULTS_MD}")
    print(f"bf16 vs fp32 eval loss: largest difference {100 * report['bf16_max_rel_diff']:.2f} %")
    print(f"CPU-time ratio: {report['ratio_cpu']:.2f}")
    print(f"ratio: {report['ratio']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 steps per run, a smaller text")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    # One thread by default: the model is tiny, and on a shared 2-core machine two threads
    # per process wait on each other at every op (measured: a step 15x slower).
    p.add_argument("--threads", type=int, default=1, help="torch threads in every process")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="loraplace arm: runs in parallel, one core each, on a local Ray cluster "
        "(the scripts still run one after another with --threads each)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--placement", default="seed-full", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.steps = args.steps or (20 if args.quick else 250)
    if args.worker:
        common.emit(hf_run(args))
    else:
        parent(args)


if __name__ == "__main__":
    main()
