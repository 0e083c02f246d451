"""Exports loaded back the way each trainer loads them, and compared with the placement.

A file is only worth writing if the trainer that reads it adapts what was planned. Each
export is turned into the ``LoraConfig`` its trainer would build (PEFT reads
adapter_config.json; Axolotl passes lora_r / lora_alpha / lora_target_modules /
lora_target_parameters to ``LoraConfig``; LLaMA-Factory splits lora_target on commas and,
for multimodal models, keeps the model's module names that *contain* a target outside
frozen towers), injected into the model on the meta device, and the adapted module set
with each module's rank and alpha compared with the resolved placement. A mismatch is an
error and nothing is written.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import yaml

from loraplace.arch import meta_from_config
from loraplace.arch.describe import tower_of
from loraplace.errors import UserError
from loraplace.placement.export import export_placement
from loraplace.placement.resolve import ResolvedPlacement

# vLLM's LoRAConfig: max_lora_rank must be one of these (vllm/config/lora.py, 0.6 .. 0.11+)
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _peft(files: dict[str, str]):
    from peft import LoraConfig

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "adapter_config.json").write_text(files["adapter_config.json"])
        return LoraConfig.from_pretrained(tmp)


def _axolotl(doc: dict):
    from peft import LoraConfig

    return LoraConfig(
        r=doc["lora_r"],
        lora_alpha=doc["lora_alpha"],
        target_modules=doc.get("lora_target_modules") or [],
        target_parameters=doc.get("lora_target_parameters") or [],
        lora_dropout=doc.get("lora_dropout", 0.0),
        use_rslora=bool(doc.get("peft_use_rslora")),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _llama_factory(doc: dict, model):
    from peft import LoraConfig

    targets = [t.strip() for t in str(doc["lora_target"]).split(",") if t.strip()]
    frozen = set()
    if doc.get("freeze_vision_tower", True):
        frozen.add("vision")
    if doc.get("freeze_multi_modal_projector", True):
        frozen.add("projector")
    names = [n for n, _ in model.named_modules()]
    if any(tower_of(n) != "language" for n in names):  # a composite (multimodal) model
        targets = [n for n in names if any(t in n for t in targets) and tower_of(n) not in frozen]
    return LoraConfig(
        r=doc["lora_rank"],
        lora_alpha=doc.get("lora_alpha") or 2 * doc["lora_rank"],
        target_modules=targets,
        lora_dropout=doc.get("lora_dropout", 0.0),
        use_rslora=bool(doc.get("use_rslora")),
        task_type="CAUSAL_LM",
    )


def adapted_by_peft(model, config) -> dict[str, tuple[int, float]]:
    """{module or parameter name: (r, alpha)} after PEFT injects ``config`` into ``model``."""

    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            peft_model = get_peft_model(model, config, low_cpu_mem_usage=True)
        except ValueError as exc:
            raise UserError(f"PEFT refuses the export: {str(exc).splitlines()[0]}") from None
    out = {}
    for name, mod in peft_model.named_modules():
        if isinstance(mod, BaseTunerLayer) and "default" in getattr(mod, "r", {}):
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if type(mod).__name__ == "ParamWrapper":
                key += "." + mod.parameter_name
            out[key] = (int(mod.r["default"]), float(mod.lora_alpha["default"]))
    return out


def trainer_config(fmt: str, files: dict[str, str], model):
    """The LoraConfig the trainer reading these files would build."""
    if fmt == "peft":
        return _peft(files)
    doc = yaml.safe_load(next(iter(files.values())))
    return _axolotl(doc) if fmt == "axolotl" else _llama_factory(doc, model)


def verify_export(rp: ResolvedPlacement, fmt: str, files: dict[str, str], model_config) -> None:
    """Raise UserError unless the export adapts exactly rp's modules at their ranks/alphas."""

    got = adapted_by_peft(
        meta_from_config(model_config), trainer_config(fmt, files, meta_from_config(model_config))
    )
    want = {m.name: (m.rank, float(m.alpha)) for m in rp.modules}
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    other = [n for n in want if n in got and got[n] != want[n]]
    if not (missing or extra or other):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} planned module(s) not adapted (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unplanned module(s) adapted (e.g. {extra[0]})")
    if other:
        n = other[0]
        parts.append(
            f"{len(other)} with another rank/alpha (e.g. {n}: r={got[n][0]} alpha={got[n][1]:g}, "
            f"planned r={want[n][0]} alpha={want[n][1]:g})"
        )
    raise UserError(
        f"the {fmt} export of {rp.name!r} does not load back as planned: "
        f"{'; '.join(parts)}; nothing was written"
    )


def serving_warnings(rp: ResolvedPlacement) -> list[str]:
    """Documented limits of serving the adapter with vLLM."""
    out = []
    r_max = max(m.rank for m in rp.modules)
    fits = [r for r in VLLM_MAX_LORA_RANKS if r >= r_max]
    if not fits:
        out.append(
            f"vLLM cannot serve rank {r_max}: its max_lora_rank accepts at most "
            f"{VLLM_MAX_LORA_RANKS[-1]}"
        )
    elif r_max not in VLLM_MAX_LORA_RANKS:
        out.append(
            f"vLLM's --max-lora-rank accepts only {', '.join(map(str, VLLM_MAX_LORA_RANKS))}: "
            f"serve this rank-{r_max} adapter with --max-lora-rank {fits[0]}"
        )
    outside = [m for m in rp.modules if m.tower != "language"]
    if outside:
        out.append(
            f"vLLM adds LoRA to the language model only: {len(outside)} {outside[0].tower} "
            f"module(s) (e.g. {outside[0].name}) would be ignored when served"
        )
    if any(m.kind == "param" for m in rp.modules):
        out.append(
            "vLLM serves LoRA on fused 3-D experts only for models it marks as supporting "
            "MoE LoRA: check your vLLM version and model before relying on it"
        )
    return out


def verified_export(
    rp: ResolvedPlacement,
    fmt: str,
    model_config,
    *,
    base_model: str,
    dropout: float = 0.0,
    data=None,
    base_note: str | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Render, load back and compare; returns (files, serving warnings).

    ``data``: an export_data.DataSide, whose dataset keys the trainer files then carry.
    """

    files = export_placement(
        rp, fmt, base_model=base_model, dropout=dropout, data=data, base_note=base_note
    )
    verify_export(rp, fmt, files, model_config)
    return files, serving_warnings(rp)


__all__ = ["VLLM_MAX_LORA_RANKS", "serving_warnings", "verified_export", "verify_export"]
