"""What loraplace knows of a model's layout: adaptable units with role, layer and tower."""

from __future__ import annotations

from dataclasses import dataclass, field

from loraplace.arch.roles import ROLES

TOWERS = ("language", "vision", "projector")


@dataclass(frozen=True)
class ModuleInfo:
    """One adaptable unit of a model: a linear layer, or a parameter PEFT adapts directly."""

    name: str  # full dotted name as PEFT sees it (for kind "param": the parameter's name)
    role: str
    layer: int | None  # block index inside its tower; None outside the blocks (lm_head)
    in_features: int
    out_features: int
    # "linear" | "conv1d" (GPT-2 stores the weight transposed) | "param": a 2-D or fused
    # 3-D expert parameter, adapted through PEFT's target_parameters
    kind: str
    tower: str = "language"  # "language" | "vision" | "projector"
    experts: int = 1  # experts stored in this one parameter (fused 3-D tensors)
    expert: int | None = None  # the expert index of a per-expert module

    @property
    def params(self) -> int:
        return self.experts * self.in_features * self.out_features


@dataclass
class ArchInfo:
    """What loraplace knows of a model's layout."""

    family: str  # config.model_type, for display
    n_layers: int  # blocks of the language model
    hidden_size: int
    base_params: int  # unique parameters of the base model (tied weights once)
    modules: list[ModuleInfo] = field(default_factory=list)
    known: bool = True  # False: roles could not be read, only patterns can place adapters
    blocks_prefix: str = ""  # e.g. "transformer.h"
    tower_layers: dict[str, int] = field(default_factory=dict)  # blocks per other tower

    def roles(self, tower: str = "language") -> list[str]:
        present = {m.role for m in self.modules if m.tower == tower}
        return [r for r in ROLES if r in present]

    def by_role(self, role: str) -> list[ModuleInfo]:
        return [m for m in self.modules if m.role == role]

    def layers_of(self, tower: str) -> int:
        return self.n_layers if tower == "language" else self.tower_layers.get(tower, 0)

    def layer_kinds(self) -> dict[int, str]:
        """Language layer -> "attention", "ssm" or "attention+ssm" (hybrids tell them apart)."""
        kinds: dict[int, set[str]] = {}
        for m in self.modules:
            if m.tower == "language" and m.layer is not None:
                part = m.role.split(".", 1)[0]
                if part in ("attn", "ssm"):
                    kinds.setdefault(m.layer, set()).add("attention" if part == "attn" else part)
        return {k: "+".join(sorted(v)) for k, v in sorted(kinds.items())}
