"""Placements: the spec, presets, resolution to explicit modules, accounting, exports."""

from loraplace.placement.peft_config import lora_config, lora_config_kwargs
from loraplace.placement.resolve import AdaptedModule, ResolvedPlacement, resolve
from loraplace.placement.spec import (
    PRESET_HELP,
    PRESETS,
    PlacementSpec,
    parse_placement,
    select_layers,
)

__all__ = [
    "PRESETS",
    "PRESET_HELP",
    "AdaptedModule",
    "PlacementSpec",
    "ResolvedPlacement",
    "lora_config",
    "lora_config_kwargs",
    "parse_placement",
    "resolve",
    "select_layers",
]
