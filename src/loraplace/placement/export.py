"""Exports of a resolved placement as the config another trainer reads.

Each format reproduces the same module set: full module names with PEFT's matching rules
(an exact full name matches exactly one module), so the trainer adapts what was planned.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from loraplace.errors import UserError
from loraplace.outdir import check_free
from loraplace.placement.export_data import (
    DataSide,
    axolotl_data,
    data_notes,
    llama_factory_data,
)
from loraplace.placement.peft_config import lora_config_kwargs
from loraplace.placement.resolve import ResolvedPlacement

FORMATS = ("peft", "axolotl", "llama-factory")


def _uniform(rp: ResolvedPlacement, fmt: str) -> tuple[int, float]:
    ranks = {m.rank for m in rp.modules}
    alphas = {m.alpha for m in rp.modules}
    if len(ranks) > 1 or len(alphas) > 1:
        raise UserError(
            f"{fmt} config has one lora rank and alpha for all modules, but placement "
            f"{rp.name!r} uses ranks {sorted(ranks)}: export with --format peft"
        )
    return ranks.pop(), alphas.pop()


def export_placement(
    rp: ResolvedPlacement,
    fmt: str,
    *,
    base_model: str,
    dropout: float = 0.0,
    data: DataSide | None = None,
    base_note: str | None = None,
) -> dict[str, str]:
    """Render the placement; returns {file name: content}.

    ``base_note``: where the base weights came from (a GGUF's quantisation), as a comment.

    With ``data`` (the study's data file), the Axolotl and LLaMA-Factory files also carry
    the dataset keys that reproduce the study's text and loss mask (export_data.py).
    """
    if fmt == "peft":
        return _peft(rp, base_model, dropout)
    if fmt not in ("axolotl", "llama-factory"):
        raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    header = (
        f"# loraplace placement {rp.name!r}: {len(rp.modules)} modules, "
        f"{rp.trainable_params:,} trainable params\n"
    )
    if base_note:
        header += f"# base: {base_note}\n"
    if data is not None:
        header += f"# data: {data.path} ({data.format}, loss on {data.loss_on})\n"
        header += "".join(f"# note: {n}\n" for n in data_notes(data, fmt))
    if fmt == "axolotl":
        return _axolotl(rp, header, base_model, dropout, data)
    return _llama_factory(rp, header, base_model, dropout, data)


def _peft(rp: ResolvedPlacement, base_model: str, dropout: float) -> dict[str, str]:
    kw = lora_config_kwargs(
        rp.modules, dropout=dropout, use_rslora=rp.use_rslora, use_dora=rp.use_dora
    )
    from peft import LoraConfig

    cfg = LoraConfig(base_model_name_or_path=base_model, **kw).to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    return {"adapter_config.json": json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n"}


def _targets(rp: ResolvedPlacement) -> tuple[list[str], list[str]]:
    """(module names, parameter names): what LoRA wraps, and the fused expert tensors."""
    names = [m.name for m in rp.modules if m.kind != "param"]
    return names, [m.name for m in rp.modules if m.kind == "param"]


def _axolotl(
    rp: ResolvedPlacement, header: str, base_model: str, dropout: float, data: DataSide | None
) -> dict[str, str]:
    r, a = _uniform(rp, "axolotl")
    names, params = _targets(rp)
    doc = {
        "base_model": base_model,
        "adapter": "lora",
        "lora_r": r,
        "lora_alpha": _number(a),
        "lora_dropout": dropout,
        "lora_target_modules": names,
        "lora_target_linear": False,
        "peft_use_rslora": rp.use_rslora,
    }
    if params:  # axolotl passes these to LoraConfig(target_parameters=...)
        doc["lora_target_parameters"] = params
    if data is not None:
        doc.update(axolotl_data(data))
    return {"axolotl.yaml": header + yaml.safe_dump(doc, sort_keys=False)}


def _llama_factory(
    rp: ResolvedPlacement, header: str, base_model: str, dropout: float, data: DataSide | None
) -> dict[str, str]:
    r, a = _uniform(rp, "llama-factory")
    names, params = _targets(rp)
    if params:
        raise UserError(
            f"LLaMA-Factory's lora_target names modules, and placement {rp.name!r} adapts "
            f"fused expert tensors ({params[0]}) that need PEFT's target_parameters: "
            "export with --format peft or axolotl"
        )
    towers = {m.tower for m in rp.modules}
    doc = {
        "model_name_or_path": base_model,
        "finetuning_type": "lora",
        "lora_rank": r,
        "lora_alpha": _number(a),
        "lora_dropout": dropout,
        "lora_target": ",".join(names),
        "use_rslora": rp.use_rslora,
    }
    # LLaMA-Factory drops targets in a frozen tower, and both are frozen by default
    if "vision" in towers:
        doc["freeze_vision_tower"] = False
    if "projector" in towers:
        doc["freeze_multi_modal_projector"] = False
    if data is None:
        return {"llama_factory.yaml": header + yaml.safe_dump(doc, sort_keys=False)}
    keys, info = llama_factory_data(data)
    doc.update(keys)
    return {  # the YAML first: roundtrip.py reads the first file as the trainer's config
        "llama_factory.yaml": header + yaml.safe_dump(doc, sort_keys=False),
        "dataset_info.json": json.dumps(info, indent=2) + "\n",
    }


def _number(x: float) -> int | float:
    """32.0 -> 32: both trainers type lora_alpha as an int."""
    return int(x) if float(x).is_integer() else x


def write_export(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write files atomically into out_dir (created if needed)."""

    check_free([out_dir / name for name in files])  # all or none of them is written
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files.items():
        path = out_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(content)
        tmp.replace(path)
        paths.append(path)
    return paths
