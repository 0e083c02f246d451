"""loraplace: where should LoRA adapters go in a transformer?"""

__version__ = "0.2.0"

import logging as _logging

# bitsandbytes (the `quantize` extra) is imported by PEFT whenever it is installed, and on a CPU
# with AVX512-BF16 it warns on every import that an optional hub kernel ("kernels") is missing.
# It then uses its own CPU kernel, so the warning is noise on every run, not news.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

# The built-in models and datasets register themselves (cheaply: no torch) before anything
# looks one up by name.
from loraplace import builtin as _builtin  # noqa: E402, F401
