"""What PEFT 0.21 will not do as asked, found before training rather than after.

Two traps, both read from PEFT's own tables so they follow its version:
- Mamba-kernel families (Falcon-H1, Mamba, Mamba2, ...) refuse LoRA on ``out_proj``.
- On transformers 5, PEFT rewrites a v4-era MoE target into the fused expert tensors:
  for DeepSeek, Qwen3-MoE, OLMoE and their kin, *any* target ending in ``gate_proj``,
  ``up_proj`` or ``down_proj`` (the dense MLP of DeepSeek's first layers, the shared
  experts) is moved to ``mlp.experts.gate_up_proj`` / ``down_proj``, so the module that
  was named is left untrained and the experts are adapted instead.
"""

from __future__ import annotations

# peft.tuners.tuners_utils._check_lora_target_modules_mamba (0.21): not exported as data
MAMBA_REFUSED = frozenset({"out_proj", "conv1d"})
MAMBA_FAMILIES = frozenset({"falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"})


def mamba_refused(family: str, name: str) -> bool:
    """PEFT raises for this module of this family."""
    return family in MAMBA_FAMILIES and name.rsplit(".", 1)[-1] in MAMBA_REFUSED


# Dense families that transformers has no checkpoint conversion for (its table, checked by
# tests/test_arch_config_json.py): they skip importing it, which imports torch (seconds).
NO_CONVERSION = frozenset({"llama", "mistral", "gemma3_text"})


def rewritten_targets(family: str, names: list[str]) -> list[str]:
    """The module names PEFT's v4 -> v5 MoE conversion would move to fused experts."""
    if family in NO_CONVERSION:
        return []
    try:
        from transformers.conversion_mapping import (
            _MODEL_TO_CONVERSION_PATTERN,
            get_checkpoint_conversion_mapping,
        )
    except ImportError:  # an older transformers has no conversion, so nothing is rewritten
        return []
    # Most families have no conversion: decide that before importing PEFT (seconds).
    if get_checkpoint_conversion_mapping(family) is None:
        return []
    try:
        from peft.utils.transformers_weight_conversion import _MOE_TARGET_MODULE_MAPPING
    except ImportError:  # an older PEFT has no conversion, so nothing is rewritten
        return []
    base = family if family == "mixtral" else _MODEL_TO_CONVERSION_PATTERN.get(family)
    old_names = _MOE_TARGET_MODULE_MAPPING.get(base or "", {})
    return [n for n in names if any(n == o or n.endswith("." + o) for o in old_names)]
