"""Realistic results stores for the analysis and report tests, written through ``Store``.

A tiny GPT-2-like model (4 layers, d=128, r=8) on the synthetic benchmark: placements are
lists of (role, layers); losses follow a planted additive model plus per-seed noise, so
the tests know which placement should win and which roles matter.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.store import Store

D_MODEL, N_LAYERS, RANK = 128, 4, 8
TOTAL_PARAMS = 870_016
ZS_LOSS, FLOOR, RETAIN_ZS = 4.1, 2.95, 3.0
# role -> (module suffix, in_features, out_features); GPT-2 names, so c_proj is two roles
ROLES = {
    "attn.qkv": ("attn.c_attn", D_MODEL, 3 * D_MODEL),
    "attn.o": ("attn.c_proj", D_MODEL, D_MODEL),
    "mlp.up": ("mlp.c_fc", D_MODEL, 4 * D_MODEL),
    "mlp.down": ("mlp.c_proj", 4 * D_MODEL, D_MODEL),
}
# planted loss reduction (nats) of each role over all 4 layers; later layers count more
ROLE_GAIN = {"mlp.up": 0.34, "mlp.down": 0.22, "attn.qkv": 0.16, "attn.o": 0.06}
LAYER_WEIGHT = [0.1, 0.2, 0.3, 0.4]
ALL = list(range(N_LAYERS))

SCRIPT = "<script>alert(1)</script>"
SEED_STUDY = {
    "c_attn+c_proj+c_fc": [(r, ALL) for r in ROLES],
    "c_attn+c_proj": [("attn.qkv", ALL), ("attn.o", ALL), ("mlp.down", ALL)],
    "c_fc": [("mlp.up", ALL)],
    SCRIPT: [("attn.qkv", [0, 1])],
}


def modules(cover: list[tuple[str, list[int]]]) -> tuple[dict, ...]:
    out = []
    for role, layers in cover:
        suffix, fin, fout = ROLES[role]
        for layer in layers:
            out.append(
                {
                    "name": f"transformer.h.{layer}.{suffix}",
                    "role": role,
                    "layer": layer,
                    "in_features": fin,
                    "out_features": fout,
                    "rank": RANK,
                    "alpha": 2.0 * RANK,
                }
            )
    return tuple(out)


def planted_gain(cover: list[tuple[str, list[int]]]) -> float:
    return sum(ROLE_GAIN[r] * LAYER_WEIGHT[lr] for r, layers in cover for lr in layers)


def manifest(seed: int) -> dict:
    """Shaped like loraplace.train.manifest.build_manifest's output."""
    return {
        "packages": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.24.0"},
        "device": "cpu",
        "machine": "x86_64",
        "platform": "Linux-6.1-x86_64-with-glibc2.36",
        "torch_threads": 2,
        "torch_interop_threads": 2,
        "precision": "fp32",
        "fingerprints": {"data": "d41d8cd98f00b204", "model": "9e107d9d372bb682"},
        "git_commit": "09c9caa1234567890abcdef",
        "command": "loraplace run study.yaml",
        "seed": seed,
    }


def _curves(rng, start: float, end: float, steps: int, diverge_at: int | None = None):
    train, evals = [], []
    for s in range(1, steps + 1):
        v = end + (start - end) * math.exp(-s / 18) + rng.normal(0, 0.03)
        if diverge_at is not None and s >= diverge_at - 5:
            v = start * (1.5 + (s - diverge_at + 5))
        train.append((s, float(v)))
        if diverge_at is not None and s >= diverge_at:
            break
        if s % 25 == 0:
            evals.append((s, float(end + (start - end) * math.exp(-s / 18) + 0.02)))
    lr = [(s, 2e-3 * 0.5 * (1 + math.cos(math.pi * s / steps))) for s in range(1, steps + 1)]
    return {"train_loss": train, "eval_loss": evals, "lr": lr}


def make_store(
    path: Path,
    placements: dict[str, list[tuple[str, list[int]]]] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    *,
    name: str = "tiny-seed-study",
    zero_shot: bool = True,
    diverged: tuple[str, int] | None = (SCRIPT, 1),
    failed: tuple[str, int] | None = None,
    forgetting: bool = True,
    full: bool = False,
    batch_inflation: dict[str, float] | None = None,
    steps: int = 100,
    budget: int | None = None,
    probe: dict | None = None,
) -> Path:
    """Write one study to ``path`` (a .db file) and return it.

    budget, probe: a budgeted study's budget and its stored probe (``ProbeResult.to_json``).
    """
    placements = SEED_STUDY if placements is None else placements
    # c_attn+c_proj's batches vary more in length: its mean batch ppl is inflated more,
    # enough to rank it below c_fc although its loss is lower (the contradiction).
    inflation = {"c_attn+c_proj": 0.05} if batch_inflation is None else batch_inflation
    store = Store(path)
    config = {
        "name": name,
        "model": "builtin:tiny-gpt2",
        "dataset": "builtin:synthetic",
        "seeds": list(seeds),
        "placements": {k: [[r, ls] for r, ls in v] for k, v in placements.items()},
        "train": {"steps": steps, "lr": 2e-3},
    }
    study_id = f"study-{zlib.crc32(name.encode()):08x}"
    if budget is not None:
        config["budget"] = budget
    store.add_study(study_id, name, config, f"loraplace run {name}.yaml --out runs/{name}")
    if budget is not None:
        store.set_meta(f"budget:{study_id}", str(budget))
    if probe is not None:
        store.save_probe(study_id, probe)
    specs: list[tuple[RunSpec, list]] = []
    for seed in seeds:
        if zero_shot and seed == seeds[0]:  # one evaluation per study, as expand makes it
            specs.append((_spec(name, "zero-shot", "zero-shot", seed, ()), []))
        for pname, cover in placements.items():
            specs.append((_spec(name, pname, "lora", seed, modules(cover)), cover))
        if full:  # full fine-tuning: every weight trains, no adapter modules
            specs.append((_spec(name, "full-ft", "full", seed, ()), []))
    store.add_runs(study_id, [s for s, _ in specs])
    for spec, cover in specs:
        rng = np.random.default_rng(zlib.crc32(f"{spec.placement_name}/{spec.seed}".encode()))
        store.mark_running(spec.run_id)
        if spec.kind == "zero-shot":
            m = {
                "eval_loss": ZS_LOSS,
                "eval_ppl": math.exp(ZS_LOSS),
                "eval_tokens": 65024.0,
                "mean_batch_ppl": math.exp(ZS_LOSS) * 1.01,
                "floor": FLOOR,
                "eval_time_s": 1.2,
            }
            if forgetting:
                m["retain_loss"] = RETAIN_ZS
            store.save_result(RunResult(spec.run_id, "done", m, {}, manifest(spec.seed)))
            continue
        if diverged and (spec.placement_name, spec.seed) == diverged:
            store.save_result(
                RunResult(
                    spec.run_id,
                    "diverged",
                    {"eval_loss": 99.0},
                    _curves(rng, ZS_LOSS, 3.5, steps, diverge_at=37),
                    manifest(spec.seed),
                    diverged_step=37,
                    error="loss 19.3 > 4.0 x initial loss at step 37",
                )
            )
            continue
        if failed and (spec.placement_name, spec.seed) == failed:
            store.save_result(
                RunResult(spec.run_id, "failed", {}, {}, {}, error="CUDA out of memory")
            )
            continue
        gain = planted_gain(cover) * (1 - 0.15 * (len(cover) > 2))  # overlap saturates
        trainable = float(
            sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in spec.modules)
        )
        t = 12.0 + trainable / 2500.0 + float(rng.normal(0, 0.4))
        if spec.kind == "full":
            gain, trainable, t = 0.8, float(TOTAL_PARAMS), 61.0 + float(rng.normal(0, 0.5))
        loss = ZS_LOSS - gain + float(rng.normal(0, 0.008))
        train_tokens = steps * 16 * 128.0
        m = {
            "eval_loss": loss,
            "eval_ppl": math.exp(loss),
            "eval_tokens": 65024.0,
            "mean_batch_ppl": math.exp(loss) * (1.01 + inflation.get(spec.placement_name, 0.0)),
            "floor": FLOOR,
            "zero_shot_loss": ZS_LOSS,
            "trainable_params": trainable,
            "total_params": float(TOTAL_PARAMS),
            "trainable_pct": 100.0 * trainable / (TOTAL_PARAMS + trainable),
            "train_time_s": t,
            "eval_time_s": 1.3,
            "tokens_per_s": train_tokens / t,
            "peak_mem_bytes": 180e6 + 40.0 * trainable + float(rng.integers(0, 1_000_000)),
            "steps": float(steps),
            "train_tokens": train_tokens,
        }
        m["rss_growth_bytes"] = m["peak_mem_bytes"]  # CPU runs: the headline is RSS growth
        if forgetting:
            m["retain_loss"] = RETAIN_ZS + 0.3 * gain + float(rng.normal(0, 0.004))
            m["retain_zero_shot_loss"] = RETAIN_ZS
        store.save_result(
            RunResult(
                spec.run_id, "done", m, _curves(rng, ZS_LOSS, loss, steps), manifest(spec.seed)
            )
        )
    store.close()
    return path


def _spec(study: str, placement: str, kind: str, seed: int, mods: tuple) -> RunSpec:
    return RunSpec(
        study=study,
        placement_name=placement,
        kind=kind,  # type: ignore[arg-type]
        model="builtin:tiny-gpt2",
        dataset="builtin:synthetic",
        seed=seed,
        train=TrainSettings(steps=100),
        modules=mods,
        fingerprints={"data": "d41d8cd98f00b204", "model": "9e107d9d372bb682"},
    )


def importance_placements() -> dict[str, list[tuple[str, list[int]]]]:
    """all / only-<role> / no-<role> / layer ranges: a role- and layer-level study."""
    out: dict[str, list[tuple[str, list[int]]]] = {"all": [(r, ALL) for r in ROLES]}
    for r in ROLES:
        out[f"only-{r}"] = [(r, ALL)]
        out[f"no-{r}"] = [(q, ALL) for q in ROLES if q != r]
    out["layers 0-1"] = [(r, [0, 1]) for r in ROLES]
    out["layers 2-3"] = [(r, [2, 3]) for r in ROLES]
    return out
