"""SFT on a real model: loraplace vs HF Trainer + PEFT vs TRL's SFTTrainer, side by side.

Every arm fine-tunes the same model (SmolLM2-135M-Instruct, Gemma-3-270M: loraplace's
dequantized GGUF weights in its cache) with LoRA r=8 (alpha 16) on the attention
projections, dropout 0, fp32, AdamW at a constant lr, gradient clipping 1.0, on the same
real task in prompt/completion form (``real-unicode-names``: the completion and its EOS
are scored), and trains on THE SAME EXAMPLES IN THE SAME BATCHES IN THE SAME ORDER:

- loraplace: a study config through ``validate_study`` -> ``expand`` -> ``LocalExecutor``,
  as ``loraplace run`` does (its LM head only at scored positions, length-grouped batches
  cut to their longest scored row);
- HF Trainer + PEFT: ``get_peft_model``, completion-only labels (-100 on the prompt),
  ``DataCollatorForSeq2Seq`` (pads to the longest row of the batch), Trainer defaults;
- TRL ``SFTTrainer`` (``completion_only_loss=True``) on a pre-tokenised dataset of
  ``input_ids`` + ``completion_mask``, TRL's collator and SFTConfig defaults (among them
  gradient checkpointing on); skipped, with the reason printed, when TRL does not import.

The examples, their tokens and the batch order are loraplace's (a ``prep`` worker writes
them); the two HF arms get them through a batch sampler over the examples, shuffling off.
Each arm is its own process (peak RSS = its ``ru_maxrss``, model load included), the arm
order alternates between models and repeats. tokens/s = the non-padding tokens of the
timed steps' examples (the same count in every arm) over the wall time from the end of
the first (untimed) step to the end of the last. Losses: the mean NLL over the batch's
scored tokens at each step, recorded unrounded in every arm.

    python benchmarks/bench_sft.py --quick     # ends with one "ratio:" line per model
    python benchmarks/bench_sft.py             # more steps, 3 repeats per arm
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
DATASET = "real-unicode-names"
RANK, ALPHA, LR, SEED = 8, 16, 5e-4, 0
ARMS = ("loraplace", "trainer", "trl")
LABELS = {"loraplace": "loraplace", "trainer": "HF Trainer + PEFT", "trl": "TRL SFTTrainer"}
EVAL_ROWS = 16  # loraplace's before/after evaluation (untimed) on this many val examples


def study_config(model: str, steps: int, batch: int) -> dict:
    """The loraplace study every arm mirrors: one attention placement, one seed."""
    return {
        "name": "bench-sft",
        "model": model,
        "dataset": DATASET,
        "retain": None,
        "placements": ["attention"],
        "rank": RANK,
        "alpha": ALPHA,
        "seeds": [SEED],
        "data": {"loss_on": "completion"},
        "train": {
            "steps": steps,
            "batch_size": batch,
            "block_size": 128,
            "lr": LR,
            "schedule": "constant",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "grad_clip": 1.0,
            "lora_dropout": 0.0,
            "precision": "fp32",
        },
        "eval": {"every": 0, "max_blocks": EVAL_ROWS},
    }


def lora_spec(args):
    from loraplace.study.expand import expand
    from loraplace.study.read import validate_study

    study = validate_study(study_config(args.model, args.steps, args.batch))
    specs, _ = expand(study)
    return next(s for s in specs if s.kind == "lora")


# ------------------------------------------------------------------------------- workers
def worker_prep(args) -> dict:
    """loraplace's tokenised examples, scored masks and batch order, saved for every arm."""
    import torch

    from loraplace.assets import Assets
    from loraplace.gguf_source import gguf_dir
    from loraplace.train.batching import batch_order, row_widths

    spec = lora_spec(args)
    blocks = Assets().spec_blocks(spec)
    mask = blocks.scored("train")
    batches = batch_order(len(blocks.train), args.batch, args.steps, spec.seed, row_widths(mask))
    batches = [b.tolist() for b in batches]
    lengths = blocks.train_lengths
    processed = [int(lengths[b].sum()) for b in batches]
    scored = [int(mask[b].sum()) for b in batches]
    data = {
        "model_dir": str(gguf_dir(args.model)),
        "rows": [blocks.train[i, : int(lengths[i])].tolist() for i in range(len(lengths))],
        # targets[i][j]: token j of row i is a scored target (predicted from token j - 1)
        "targets": [[False] + mask[i, : int(lengths[i]) - 1].tolist() for i in range(len(lengths))],
        "batches": batches,
        "targets_modules": sorted({m["name"].rsplit(".", 1)[-1] for m in spec.modules}),
        "n_modules": len(spec.modules),
    }
    torch.save(data, args.data)
    return {
        "head": head_ceiling(data["model_dir"], sum(scored) / sum(processed)),
        "padding": padding_share(lengths, batches, args.batch),
        "examples": len(lengths),
        "tokens_per_step": processed,
        "scored_per_step": scored,
        "targets": data["targets_modules"],
        "n_modules": data["n_modules"],
    }


def head_ceiling(model_dir: str, scored_share: float) -> dict[str, float]:
    """What running the LM head only at scored tokens can save, by matmul FLOPs alone.

    Per token, the body's linear layers cost B multiply-adds and the head H (vocab x d),
    forward and again for the input gradient (the base weights are frozen). Every arm
    here runs the same batches, so the head is the one place loraplace's step does less
    work: at most (B + H) / (B + H * scored_share) times faster (attention, LoRA and
    element-wise work left out).
    """
    import torch

    from loraplace.models import meta_model

    model = meta_model(model_dir)
    head = model.get_output_embeddings()
    body = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    )
    h = head.weight.numel()
    return {
        "body_macs": body,
        "head_macs": h,
        "head_share": h / (body + h),
        "scored_share": scored_share,
        "ratio_ceiling": (body + h) / (body + h * scored_share),
    }


def padding_share(lengths, batches: list[list[int]], batch: int) -> dict[str, float]:
    """Padding tokens / real tokens of these batches, and of plain shuffled batches.

    Every arm here runs loraplace's length-grouped batches (so the losses compare); a
    Trainer left to its default sampler would draw shuffled batches and pad each to its
    longest row. This says how much more it would compute then (nothing is run).
    """
    import torch

    def share(bs) -> float:
        real = sum(int(lengths[b].sum()) for b in bs)
        return sum(len(b) * int(lengths[b].max()) for b in bs) / real - 1

    g = torch.Generator().manual_seed(SEED)
    shuffled = torch.randperm(len(lengths), generator=g).split(batch)
    return {"grouped": share(batches), "shuffled": share(shuffled)}  # a whole epoch


class _Stamps:
    """(wall, process CPU) at the end of every optimizer step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))


def arm_loraplace(args, data: dict, stamps: _Stamps) -> list[float]:
    """The study's LoRA run through the executor ``loraplace run`` uses."""
    from loraplace.executors.base import NullProgress
    from loraplace.executors.local import LocalExecutor

    losses: list[float] = []

    class Clock(NullProgress):
        def step(self, spec, step, steps, loss, tokens_per_s) -> None:
            stamps.mark()
            losses.append(loss)

    result = LocalExecutor(peak_flops=1.0, keep_adapters=False).run_one(lora_spec(args), Clock())
    if result.status != "done":
        raise RuntimeError(f"loraplace run {result.status}: {result.error}")
    return losses


def _hf_model(data: dict):
    """The base model and tokenizer from the same files, with PEFT LoRA seeded as loraplace."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(data["model_dir"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(data["model_dir"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(SEED)  # the adapter init: the same draw as loraplace's
    config = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=data["targets_modules"], lora_dropout=0.0
    )
    net = get_peft_model(model, config)
    n = sum(1 for _, m in net.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))
    if n != data["n_modules"]:
        raise RuntimeError(f"PEFT adapted {n} modules, loraplace {data['n_modules']}")
    return net, tok


def _recording(base, data: dict, losses: list):
    """``base`` (a Trainer class) fed loraplace's batches, recording each step's loss."""
    from torch.utils.data import DataLoader

    class Recording(base):
        def get_train_dataloader(self):  # the batches as loraplace drew them, in order
            dl = DataLoader(
                self.train_dataset,
                batch_sampler=data["batches"],
                collate_fn=self.data_collator,
                num_workers=0,
            )
            return self.accelerator.prepare(dl)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                losses.append((out[0] if return_outputs else out).detach())
            return out

    return Recording


def _common_args(args, out: str) -> dict:
    """TrainingArguments both HF arms must share with loraplace's settings."""
    return common.hf_training_args(
        out, batch=args.batch, steps=args.steps, lr=LR, seed=SEED, bf16=False
    )


def _clock(stamps: _Stamps):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.mark()

    return Clock()


def arm_trainer(args, data: dict, stamps: _Stamps) -> list[float]:
    """HF Trainer + PEFT with completion-only labels and the standard padding collator."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    net, tok = _hf_model(data)
    examples = [
        {
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": [t if s else -100 for t, s in zip(ids, scored, strict=True)],
        }
        for ids, scored in zip(data["rows"], data["targets"], strict=True)
    ]
    losses: list = []
    with tempfile.TemporaryDirectory() as out:
        trainer = _recording(Trainer, data, losses)(
            model=net,
            args=TrainingArguments(**_common_args(args, out)),
            train_dataset=examples,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True),
            callbacks=[_clock(stamps)],
        )
        trainer.train()
    return [float(x) for x in losses]


def arm_trl(args, data: dict, stamps: _Stamps) -> list[float]:
    """TRL's SFTTrainer, completion_only_loss, on the pre-tokenised examples."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    net, tok = _hf_model(data)
    ds = Dataset.from_dict(
        {
            "input_ids": data["rows"],
            "completion_mask": [[int(s) for s in m] for m in data["targets"]],
        }
    )
    losses: list = []
    with tempfile.TemporaryDirectory() as out:
        trainer = _recording(SFTTrainer, data, losses)(
            model=net,
            args=SFTConfig(**_common_args(args, out), completion_only_loss=True),
            train_dataset=ds,
            processing_class=tok,
            callbacks=[_clock(stamps)],
        )
        if len(trainer.train_dataset) != len(data["rows"]):
            raise RuntimeError("TRL's prepared dataset changed the number of examples")
        trainer.train()
    return [float(x) for x in losses]


def trl_version() -> tuple[str | None, str | None]:
    """(TRL's version, None), or (None, why its arm cannot run); the import is the worker's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trl"), None
    except PackageNotFoundError:
        return None, "trl is not installed (pip install trl: 1.16.0 runs beside transformers 5)"


def worker(args) -> dict:
    import torch

    common.set_threads(args.threads)
    if args.worker == "prep":
        return worker_prep(args)
    data = torch.load(args.data)
    stamps = _Stamps()
    t0 = time.perf_counter()
    arm = {"loraplace": arm_loraplace, "trainer": arm_trainer, "trl": arm_trl}[args.worker]
    losses = arm(args, data, stamps)
    marks, w = stamps.marks, args.warmup
    if not len(marks) == len(losses) == len(data["batches"]) == args.steps:
        raise RuntimeError(f"{args.worker}: {len(marks)} steps, {len(losses)} losses")
    tokens = sum(sum(len(data["rows"][i]) for i in b) for b in data["batches"][w:])
    return {
        "arm": args.worker,
        "model": args.model,
        "losses": losses,
        "tokens_per_s": tokens / (marks[-1][0] - marks[w - 1][0]),
        "tokens_per_cpu_s": tokens / (marks[-1][1] - marks[w - 1][1]),
        "step_s": [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)],
        "peak_rss_bytes": common.peak_rss_bytes(),
        "wall_s": time.perf_counter() - t0,
    }


# -------------------------------------------------------------------------------- parent
def worker_argv(args, arm: str, model: str, data: Path) -> list[str]:
    argv = [str(Path(__file__).resolve()), "--worker", arm, "--model", model]
    argv += ["--data", str(data), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    return argv + ["--batch", str(args.batch), "--threads", str(args.threads)]


def run_model(args, model: str, tmp: Path, flip: bool) -> dict:
    """Every arm on one model, ``repeats`` times, the arm order alternating."""
    data = tmp / f"{model}.pt"
    prep = common.run_worker(worker_argv(args, "prep", model, data))
    print(
        f"{model}: {prep['examples']} train examples; LoRA on {prep['n_modules']} modules "
        f"({', '.join(prep['targets'])}); tokens per step {prep['tokens_per_step']}, "
        f"scored {prep['scored_per_step']}; LM head {100 * prep['head']['head_share']:.0f} % of "
        f"the linear FLOPs, so the head alone allows a ratio of at most "
        f"{prep['head']['ratio_ceiling']:.2f}; padding +{100 * prep['padding']['grouped']:.1f} % "
        f"in these batches, +{100 * prep['padding']['shuffled']:.1f} % in shuffled ones",
        flush=True,
    )
    arms = [a for a in ARMS if a != "trl" or args.trl_skipped is None]
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.repeats):
        order = arms[::-1] if (r % 2 == 1) != flip else arms
        for arm in order:
            if arm == "trl" and args.trl_skipped is not None:
                continue
            try:
                res = common.run_worker(worker_argv(args, arm, model, data))
            except RuntimeError as exc:
                if arm != "trl":
                    raise
                args.trl_skipped = str(exc).strip().splitlines()[-1]
                print(f"TRL arm skipped: {args.trl_skipped}", flush=True)
                del runs["trl"]
                continue
            runs[arm].append(res)
            print(
                f"{model} repeat {r + 1}/{args.repeats} {LABELS[arm]:17s}: "
                f"{res['tokens_per_s']:7.1f} tokens/s ({res['tokens_per_cpu_s']:7.1f} per CPU-s)"
                f", loss {res['losses'][0]:.6f} -> {res['losses'][-1]:.6f}, peak RSS "
                f"{common.fmt_bytes(res['peak_rss_bytes'])}, load {common.load_average()[0]:.1f}",
                flush=True,
            )
    return {"prep": prep, "runs": runs}


def summarise(model_runs: dict) -> dict:
    runs = model_runs["runs"]
    tps = {a: common.median([r["tokens_per_s"] for r in rs]) for a, rs in runs.items()}
    cpu = {a: common.median([r["tokens_per_cpu_s"] for r in rs]) for a, rs in runs.items()}
    others = [a for a in runs if a != "loraplace"]
    best = max(others, key=lambda a: tps[a])
    ref = runs["loraplace"][0]["losses"]
    diffs = {
        a: max(abs(x - y) for r in rs for x, y in zip(r["losses"], ref, strict=True))
        for a, rs in runs.items()
    }
    return {
        "tokens_per_s": tps,
        "tokens_per_cpu_s": cpu,
        "peak_rss_bytes": {a: max(r["peak_rss_bytes"] for r in rs) for a, rs in runs.items()},
        "final_loss": {a: rs[0]["losses"][-1] for a, rs in runs.items()},
        "first_loss": {a: rs[0]["losses"][0] for a, rs in runs.items()},
        "max_loss_diff_vs_loraplace": diffs,
        "best_other": best,
        "ratio": tps["loraplace"] / tps[best],
        "ratio_cpu": cpu["loraplace"] / cpu[best],
    }


def markdown(report: dict) -> str:
    a = report["args"]
    lines = [
        f"### SFT on real models: loraplace vs HF Trainer + PEFT vs TRL "
        f"({'--quick' if a['quick'] else 'full'})",
        "",
        f"`{report['command']}` ({report['date']})",
        "",
        f"- Machine: {common.machine_line(report['machine'], a['threads'])}",
        f"- Data: `{DATASET}` (prompt/completion, completion + EOS scored); LoRA r={RANK}, "
        f"alpha={ALPHA} on the attention projections; batch {a['batch']}; {a['steps']} steps "
        f"({a['warmup']} untimed); lr {LR} constant; fp32; {a['repeats']} repeat(s) per arm, "
        f"order alternating; the same batches in the same order in every arm",
        f"- TRL: {report['trl']}; the whole invocation took {report['wall_s']:.0f} s",
        "",
        "Padding (tokens computed beyond the real ones) of the batches every arm ran: "
        + ", ".join(
            f"{m} +{100 * r['prep']['padding']['grouped']:.1f} %" for m, r in report["raw"].items()
        )
        + "; of a Trainer's default shuffled batches (one epoch, not run): "
        + ", ".join(
            f"{m} +{100 * r['prep']['padding']['shuffled']:.1f} %" for m, r in report["raw"].items()
        )
        + ".",
        "",
        "Where the time can go: the LM head's share of the linear-layer FLOPs, the scored share "
        "of the processed tokens, and the largest ratio running the head at scored tokens "
        "only can give on these same batches: "
        + "; ".join(
            f"{m} {100 * h['head_share']:.0f} %, {100 * h['scored_share']:.0f} %, "
            f"{h['ratio_ceiling']:.2f}"
            for m, h in ((m, r["prep"]["head"]) for m, r in report["raw"].items())
        )
        + ".",
        "",
        "| model | arm | tokens/s (median) | tokens per CPU-s | peak RSS | first loss "
        "| final loss | max loss diff vs loraplace | ratio loraplace / arm |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, s in report["results"].items():
        for arm, tps in s["tokens_per_s"].items():
            ratio = "" if arm == "loraplace" else f"{s['tokens_per_s']['loraplace'] / tps:.2f}"
            lines.append(
                f"| {model} | {LABELS[arm]} | {tps:.1f} | {s['tokens_per_cpu_s'][arm]:.1f} "
                f"| {common.fmt_bytes(s['peak_rss_bytes'][arm])} | {s['first_loss'][arm]:.6f} "
                f"| {s['final_loss'][arm]:.6f} | {s['max_loss_diff_vs_loraplace'][arm]:.1e} "
                f"| {ratio} |"
            )
    return "\n".join(lines)


def parent(args) -> None:
    import sys

    t0 = time.perf_counter()
    mach = common.machine()
    print(f"machine: {common.machine_line(mach, args.threads)}", flush=True)
    trl_ver, args.trl_skipped = trl_version()
    if args.trl_skipped is not None:
        print(f"TRL arm skipped: {args.trl_skipped}", flush=True)
    results, raw = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(args.models):
            raw[model] = run_model(args, model, Path(tmp), flip=i % 2 == 1)
            results[model] = summarise(raw[model])
    trl = f"trl {trl_ver}" if args.trl_skipped is None else f"skipped: {args.trl_skipped}"
    report = {
        "command": "python benchmarks/bench_sft.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": mach,
        "load_average_end": common.load_average(),
        "args": vars(args),
        "trl": trl,
        "raw": raw,
        "results": results,
        "wall_s": time.perf_counter() - t0,  # the whole invocation (--quick: under 5 min?)
    }
    name = "bench_sft_quick" if args.quick else "bench_sft"
    common.publish(name, report, markdown(report))
    for model, s in results.items():
        worst = s["max_loss_diff_vs_loraplace"]
        diffs = ", ".join(f"{LABELS[a]} {d:.1e}" for a, d in worst.items())
        print(f"{model}: max |loss diff| vs loraplace over all steps: {diffs}")
    print(f"wall time of the whole invocation: {report['wall_s']:.0f} s")
    for model, s in results.items():
        print(
            f"ratio: {model} loraplace/{LABELS[s['best_other']]} tokens/s = {s['ratio']:.2f} "
            f"(per CPU-s {s['ratio_cpu']:.2f})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few steps, one run per arm")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--repeats", type=int, default=None, help="runs per arm and model")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="leading steps not timed")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads in every process")
    p.add_argument("--worker", choices=["prep", *ARMS], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.steps = args.steps or (8 if args.quick else 20)  # --quick: 7 timed steps
    if args.worker:
        common.emit(worker(args))
    else:
        parent(args)


if __name__ == "__main__":
    main()
