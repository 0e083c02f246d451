"""The resolved module list as a PEFT ``LoraConfig``: explicit names, per-module patterns."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping


def _get(m, key):
    return m[key] if isinstance(m, Mapping) else getattr(m, key)


def lora_config_kwargs(
    modules: Iterable, *, dropout: float = 0.0, use_rslora: bool = False
) -> dict:
    """LoraConfig keyword arguments that adapt exactly ``modules`` at their ranks.

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
    kinds = {
        (
            _get(m, "kind")
            if (isinstance(m, Mapping) and "kind" in m) or hasattr(m, "kind")
            else "linear"
        )
        for m in mods
    }
    return {
        "r": r0,
        "lora_alpha": a0,
        "target_modules": [_get(m, "name") for m in mods],
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "lora_dropout": float(dropout),
        "use_rslora": bool(use_rslora),
        # GPT-2's Conv1D stores weights transposed; PEFT would otherwise warn and flip it.
        "fan_in_fan_out": kinds == {"conv1d"},
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def lora_config(modules: Iterable, *, dropout: float = 0.0, use_rslora: bool = False):
    """A ``peft.LoraConfig`` that adapts exactly the resolved modules."""
    from peft import LoraConfig

    return LoraConfig(**lora_config_kwargs(modules, dropout=dropout, use_rslora=use_rslora))
