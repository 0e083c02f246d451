"""loraplace: where should LoRA adapters go in a transformer?"""

__version__ = "0.1.0"
