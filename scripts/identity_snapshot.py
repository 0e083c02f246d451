"""Print the identities the stores key on, for every shipped study: a before/after check.

For the default study and every ``examples/*.yaml``: the study id, every run's id (the
study prepared as ``loraplace run`` prepares it: real model and data fingerprints), the
baseline (zero-shot evaluation) cache key of each run and the token-blocks cache keys the
driver and the runs ask for. A change to how identity is computed must leave this output
byte-identical (a run id that moves makes old stores re-run finished work):

    PYTHONPATH=src python scripts/identity_snapshot.py > /tmp/before.txt
    ... change ...
    PYTHONPATH=src python scripts/identity_snapshot.py | diff /tmp/before.txt -

A study whose model needs the Hugging Face hub (examples/seed_study.yaml: gpt2-medium)
is expanded against that model's config on the meta device, with fixed fingerprints.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIGS = {"gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024)}


def _baseline_key(spec) -> tuple:
    from loraplace import identity
    from loraplace.train.measure import resolve_device, resolve_precision

    device = resolve_device(spec.train.device)
    precision = resolve_precision(spec.train.precision, device)
    return identity.baseline_key(spec, str(device), precision)


def _snapshot_prepared(study, out: list[str]) -> None:
    from loraplace.assets import Assets
    from loraplace.driver import prepare_study

    assets = Assets()
    prepared = prepare_study(study, assets)
    driver_keys = list(assets._blocks)
    for spec in prepared.specs:
        out.append(f"run {spec.run_id} {spec.placement_name} seed={spec.seed} task={spec.task}")
        out.append(f"  baseline {_baseline_key(spec)!r}")
        assets.spec_blocks(spec)
        assets.retain_blocks(spec)
        assets.test_blocks(spec)
    out += [f"blocks(driver) {k!r}" for k in driver_keys]
    out += [f"blocks(runs, new) {k!r}" for k in assets._blocks if k not in driver_keys]


def _snapshot_expanded(study, out: list[str]) -> None:
    from transformers import GPT2Config

    from loraplace.study import expand

    config = GPT2Config(**HUB_CONFIGS[study.model])
    fps = {"model": "0" * 16}
    specs, _ = expand(study, target=config, fingerprints=fps)
    for spec in specs:
        out.append(f"run {spec.run_id} {spec.placement_name} seed={spec.seed} task={spec.task}")
        out.append(f"  baseline {_baseline_key(spec)!r}")


# The settings added after stores existed, each set away from its default on a shipped
# study (expanded against the model's config, fixed fingerprints: no data is read).
VARIANTS = [
    (None, ["train.grad_accum=2"]),
    (None, ["train.grad_checkpointing=true"]),
    (None, ["train.lora_bias=true"]),
    (None, ["train.modules_to_save=[lm_head]"]),
    (None, ["train.diverge_rise=2.0"]),
    (None, ["train.test_fraction=0.2"]),
    (None, ["train.epochs=1.5", "eval.max_blocks=10", "eval.every=0"]),
    (None, ["use_dora=true"]),
    (None, ["use_rslora=true", "alpha_rule=rslora"]),
    (None, ["init_lora_weights=gaussian"]),
    (None, ["model.quantize=4bit"]),
    (None, ["data.loss_on=all", "data.val_fraction=0.2"]),
    (None, ["eval.dataset=examples/data/map_pc.jsonl"]),
    (None, ["analysis.margin=0.01", "select.by=eval_loss", "train.lr=[0.001,0.002]"]),
    (None, ["budget=seed-ffn@r8", "budget_per_role=true"]),
    ("examples/instruct_map.yaml", ["eval.tasks=[{name: x, kind: exact_match, limit: 5}]"]),
    ("examples/instruct_map.yaml", ["eval.tasks=[{name: y, kind: choice, stop: []}]"]),
]


def _snapshot_variants(out: list[str]) -> None:
    from loraplace.study import expand, load_study

    for path, overrides in VARIANTS:
        study = load_study(ROOT / path if path else None, overrides)
        out.append(f"== variant {path or 'default'} {' '.join(overrides)}: id {study.study_id}")
        specs, _ = expand(study, fingerprints={"model": "0" * 16, "data": "1" * 16})
        for spec in specs:
            out.append(f"run {spec.run_id} {spec.placement_name} seed={spec.seed}")
            out.append(f"  baseline {_baseline_key(spec)!r}")


def main() -> None:
    from loraplace.study import load_study

    files = [None, *sorted((ROOT / "examples").glob("*.yaml"))]
    out: list[str] = []
    for path in files:
        study = load_study(path)
        name = "default" if path is None else path.relative_to(ROOT).as_posix()
        out.append(f"== {name}: study {study.name} id {study.study_id}")
        if study.model in HUB_CONFIGS:
            _snapshot_expanded(study, out)
        else:
            _snapshot_prepared(study, out)
    _snapshot_variants(out)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
