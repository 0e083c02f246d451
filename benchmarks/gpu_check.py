"""The CUDA path end to end: one small study per precision, checked against the CPU.

Variants: fp32, bf16 (autocast) and a 4-bit NF4 base (QLoRA-style, bf16 compute), each
with gradient checkpointing off and on; plus the same spec in fp32 on the CPU. Every
variant is an ordinary study (the driver, the store, a saved adapter), so what is
checked is the path users run. Reported per variant: tokens/s, peak memory as the run
recorded it (CUDA max_memory_allocated and reserved; RSS growth on CPU), eval loss and
its difference from the CPU fp32 run of the same spec.

    bash benchmarks/gpu_check.sh                # on a machine with one GPU (< 8 minutes)
    python benchmarks/gpu_check.py --cpu-smoke  # the same script on the CPU, few steps

Expected: fp32 on CUDA matches the CPU eval loss to ~1e-4 (kernel order differs);
bf16 and 4-bit differ more (reduced precision), and checkpointing changes nothing but
memory and time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = [  # (label, precision, quantize, grad checkpointing)
    ("fp32", "fp32", None, False),
    ("fp32+ckpt", "fp32", None, True),
    ("bf16", "bf16", None, False),
    ("bf16+ckpt", "bf16", None, True),
    ("4bit", "bf16", "4bit", False),
    ("4bit+ckpt", "bf16", "4bit", True),
]


def study_config(out: Path, device: str, precision: str, quantize, ckpt: bool, steps: int):
    """The one spec every variant runs (the smoke run's few steps also cap the eval)."""
    return {
        "name": "gpu-check",
        "model": "tiny-markov",
        "dataset": "markov-mix",
        "retain": None,
        "placements": ["seed-full"],
        "rank": 8,
        "alpha": 16,
        "seeds": [0],
        "zero_shot": False,
        "quantize": quantize,
        "save": "best",
        "train": {
            "steps": steps,
            "batch_size": 16,
            "block_size": 128,
            "warmup_steps": min(20, steps // 4),
            "precision": precision,
            "device": device,
            "grad_checkpointing": ckpt,
        },
        "eval": {"every": 0, "batch_size": 64, "max_blocks": 64 if steps < 50 else None},
        "out": str(out),
    }


def run_variant(root: Path, label: str, device: str, precision, quantize, ckpt, steps) -> dict:
    from loraplace.driver import run_study
    from loraplace.store import Store
    from loraplace.study import validate_study

    out = root / label.replace("+", "-").replace(" ", "-") / device
    study = validate_study(study_config(out, device, precision, quantize, ckpt, steps))
    t0 = time.perf_counter()
    outcome = run_study(study)
    wall = time.perf_counter() - t0
    with Store(out, create=False, writer=False) as store:
        run = next(r for r in store.runs(outcome.study_id) if r["kind"] == "lora")
        m = store.metrics([run["run_id"]]).get(run["run_id"], {})
        manifest = store.manifest(run["run_id"])
    return {
        "variant": label,
        "device": device,
        "status": run["status"],
        "error": run["error"],
        "eval_loss": m.get("eval_loss"),
        "tokens_per_s": m.get("tokens_per_s"),
        "cuda_peak_allocated_bytes": m.get("cuda_peak_allocated_bytes"),
        "cuda_peak_reserved_bytes": m.get("cuda_peak_reserved_bytes"),
        "rss_growth_bytes": m.get("rss_growth_bytes"),
        "peak_mem_measure": manifest.get("peak_mem_measure"),
        "gpu": manifest.get("gpu"),
        "adapter_saved": (out / "adapters" / run["run_id"]).is_dir(),
        "wall_s": wall,
    }


def _mib(row: dict, key: str) -> str:
    return f"{row[key] / 2**20:.1f} MiB" if row.get(key) is not None else "—"


def table(rows: list[dict], ref_loss: float | None) -> str:
    lines = [
        "| variant | device | status | eval loss | vs CPU fp32 | tokens/s | peak alloc | "
        "peak reserved | RSS growth |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        loss = r["eval_loss"]
        diff = f"{loss - ref_loss:+.2e}" if loss is not None and ref_loss is not None else "—"

        lines.append(
            f"| {r['variant']} | {r['device']} | {r['status']} | "
            f"{f'{loss:.5f}' if loss is not None else '—'} | {diff} | "
            f"{r['tokens_per_s'] or 0:,.0f} | {_mib(r, 'cuda_peak_allocated_bytes')} | "
            f"{_mib(r, 'cuda_peak_reserved_bytes')} | {_mib(r, 'rss_growth_bytes')} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="every variant on the CPU")
    ap.add_argument("--steps", type=int, default=None, help="default 200 (GPU), 8 (smoke)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --cpu-smoke to check the script on CPU")
        return 2
    device = "cpu" if args.cpu_smoke else "cuda"
    steps = args.steps or (8 if args.cpu_smoke else 200)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        ref = run_variant(root, "cpu reference", "cpu", "fp32", None, False, steps)
        ref["variant"] = "fp32 (CPU reference)"
        rows.append(ref)
        for label, precision, quantize, ckpt in VARIANTS:
            print(f"[gpu_check] {label} on {device} ...", flush=True)
            try:
                rows.append(run_variant(root, label, device, precision, quantize, ckpt, steps))
                print(f"[gpu_check]   {json.dumps(rows[-1], default=str)}", flush=True)
            except Exception as exc:  # report the variant as failed; keep checking the rest
                rows.append(
                    {
                        "variant": label,
                        "device": device,
                        "status": "error",
                        "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                        "eval_loss": None,
                        "tokens_per_s": None,
                    }
                )
    print(table(rows, ref["eval_loss"]))
    for r in rows:
        if r.get("error"):
            print(f"  {r['variant']}: {r['error']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0 if all(r["status"] == "done" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
