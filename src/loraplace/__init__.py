"""loraplace: where should LoRA adapters go in a transformer?"""

__version__ = "0.1.0"

# The built-in models and datasets register themselves (cheaply: no torch) before anything
# looks one up by name.
from loraplace import builtin as _builtin  # noqa: E402, F401
