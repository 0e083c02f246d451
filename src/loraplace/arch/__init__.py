"""Module roles per model family, detected from the module tree and the config.

Every adaptable linear layer (``nn.Linear`` or GPT-2's transposed ``Conv1D``) gets a role,
a layer index and a tower; so do the fused 3-D expert parameters of transformers 5's
mixture-of-experts blocks, which PEFT adapts through ``target_parameters``.
"""

from loraplace.arch.describe import describe, meta_from_config
from loraplace.arch.layout import TOWERS, ArchInfo, ModuleInfo
from loraplace.arch.layout_view import layout_summary
from loraplace.arch.roles import EXPERT_ROLES, ROLES

__all__ = [
    "EXPERT_ROLES",
    "ROLES",
    "TOWERS",
    "ArchInfo",
    "ModuleInfo",
    "describe",
    "meta_from_config",
    "layout_summary",
]
