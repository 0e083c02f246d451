"""The resolved module list as a PEFT ``LoraConfig``: explicit names, per-module patterns."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from loraplace.errors import UserError


def _get(m, key):
    return m[key] if isinstance(m, Mapping) else getattr(m, key)


def _kind(m) -> str:
    """linear | conv1d | param; run specs stored before "kind" existed are linear."""
    has = (isinstance(m, Mapping) and "kind" in m) or hasattr(m, "kind")
    return _get(m, "kind") if has else "linear"


def lora_config_kwargs(
    modules: Iterable,
    *,
    dropout: float = 0.0,
    use_rslora: bool = False,
    use_dora: bool = False,
    init_lora_weights: bool | str = True,
    lora_bias: bool = False,
    modules_to_save: Iterable[str] = (),
) -> dict:
    """LoraConfig keyword arguments that adapt exactly ``modules`` at their ranks.

    Modules of kind "param" (fused 3-D experts, routers' weights) go to
    ``target_parameters``, the rest to ``target_modules``. use_dora / init_lora_weights:
    PEFT's variants (DoRA; "gaussian", "pissa", "olora" ...), left out at PEFT's defaults.

    lora_bias: a trainable bias on each LoRA B; modules_to_save: modules trained in full
    as copies. Both are left out of the config when off, as PEFT's defaults.

    The most common rank/alpha become ``r``/``lora_alpha``; the rest go to
    ``rank_pattern``/``alpha_pattern`` keyed by the escaped full name (PEFT reads those
    keys as regexes anchored at a name boundary, so an escaped full name matches one module).
    """
    mods = list(modules)
    if not mods:
        raise ValueError("a LoRA config needs at least one module")
    r0 = Counter(int(_get(m, "rank")) for m in mods).most_common(1)[0][0]
    a0 = Counter(float(_get(m, "alpha")) for m in mods).most_common(1)[0][0]
    rank_pattern = {
        re.escape(_get(m, "name")): int(_get(m, "rank")) for m in mods if int(_get(m, "rank")) != r0
    }
    alpha_pattern = {
        re.escape(_get(m, "name")): float(_get(m, "alpha"))
        for m in mods
        if float(_get(m, "alpha")) != a0
    }
    kinds = {_kind(m) for m in mods}
    params = [_get(m, "name") for m in mods if _kind(m) == "param"]
    _check_param_options(params, dropout=dropout, use_dora=use_dora, lora_bias=lora_bias)
    if use_dora and lora_bias:  # PEFT's LoraConfig refuses the pair with a traceback
        raise UserError("lora_bias cannot be used with DoRA (PEFT has none): set one of them off")
    extra: dict = {"target_parameters": params} if params else {}
    if use_dora:
        extra["use_dora"] = True
    if init_lora_weights is not True:
        extra["init_lora_weights"] = init_lora_weights
    if lora_bias:
        extra["lora_bias"] = True
    if modules_to_save:
        extra["modules_to_save"] = list(modules_to_save)
    return {
        "r": r0,
        "lora_alpha": a0,
        # [] when only parameters are adapted: None would let PEFT pick its default modules
        "target_modules": [_get(m, "name") for m in mods if _kind(m) != "param"],
        **extra,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "lora_dropout": float(dropout),
        "use_rslora": bool(use_rslora),
        # GPT-2's Conv1D stores weights transposed; PEFT would otherwise warn and flip it.
        "fan_in_fan_out": kinds - {"param"} == {"conv1d"},
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def _check_param_options(params: list[str], **options) -> None:
    """PEFT's ParamWrapper (target_parameters) refuses dropout, DoRA and lora_bias."""
    on = [k for k, v in options.items() if v]
    if params and on:
        setting = "lora_dropout to 0" if on[0] == "dropout" else f"{on[0]} off"
        raise UserError(
            f"{on[0]} cannot be used with fused expert parameters such as {params[0]!r} "
            f"(PEFT adapts them with a ParamWrapper, which has none): set {setting}"
        )


def lora_config(modules: Iterable, **kwargs):
    """A ``peft.LoraConfig`` that adapts exactly the resolved modules (kwargs as above)."""
    from peft import LoraConfig

    return LoraConfig(**lora_config_kwargs(modules, **kwargs))
