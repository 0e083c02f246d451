"""Built-in base models and datasets that work offline on a fresh machine.

A built-in model is pretrained by loraplace itself and written with ``save_pretrained``;
``tiny-markov``'s weights ship inside the package (``builtin/shipped.py``), a model
without shipped weights is pretrained at first use into the user cache. Either way it
is loaded with ``from_pretrained`` like any other model. Other modules register their own
models with ``register_builtin_model`` (``loraplace.builtin.pytext`` does so for ``tiny-python``),
and their datasets with ``loraplace.data.register_dataset``. Importing ``loraplace`` imports
this package, so every built-in is registered before anything looks one up; nothing here
may import torch or transformers at import time.
"""

from __future__ import annotations

from pathlib import Path

from loraplace.builtin import markov  # registers the markov datasets
from loraplace.builtin.registry import (
    BUILTIN_MODELS,
    BuiltinModel,
    builtin_model_dir,
    builtin_model_info,
    is_builtin_model,
    register_builtin_model,
)
from loraplace.data.cache import CACHE_ENV, cache_dir

__all__ = [
    "BUILTIN_MODELS",
    "CACHE_ENV",
    "BuiltinModel",
    "builtin_model_dir",
    "builtin_model_info",
    "cache_dir",
    "is_builtin_model",
    "register_builtin_model",
]


def _tiny_markov_config():
    from loraplace.builtin.pretrain import tiny_markov_config

    return tiny_markov_config()


def _tiny_markov_pretrain(out: Path, progress=None) -> dict:
    from loraplace.builtin.pretrain import pretrain_tiny_markov

    return pretrain_tiny_markov(out, progress=progress)


def _tiny_markov_tokenizer():
    from loraplace.builtin.pretrain import tiny_markov_tokenizer

    return tiny_markov_tokenizer()


def _tiny_markov_version() -> str:
    return f"v{markov.GENERATOR_VERSION}"


register_builtin_model(
    BuiltinModel(
        name="tiny-markov",
        version=_tiny_markov_version(),
        description="4-layer GPT-2 (d=128) pretrained on the markov-source process",
        config=_tiny_markov_config,
        pretrain=_tiny_markov_pretrain,
        datasets=("markov-mix", "markov-lexical", "markov-transition", "markov-copy"),
        tokenizer=_tiny_markov_tokenizer,
    )
)

# Each registers its own datasets (and pytext its model) on import, after tiny-markov; the
# instruction benchmark lists after the language-modelling built-ins.
from loraplace.builtin import pytext  # noqa: E402, F401, I001
from loraplace.builtin import instruct  # noqa: E402, F401

# Real tasks from the standard library's own data (docs/real_tasks.md).
from loraplace.builtin import real_tasks  # noqa: E402, F401
