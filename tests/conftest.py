"""Session fixtures: an isolated loraplace cache, and the pretrained tiny-markov model.

Pretraining tiny-markov takes about a minute, so the ``tiny_markov_dir`` fixture pretrains
once and keeps a copy in pytest's own cache, keyed by a hash of the code that produces it
(the generator, the recipe, the torch version); later sessions copy it into their fresh
cache instead of pretraining again. Set LORAPLACE_TEST_FRESH=1 to always pretrain.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def loraplace_cache(tmp_path_factory) -> Path:
    """$LORAPLACE_CACHE as set by the user, else a temporary directory for this session."""
    if os.environ.get("LORAPLACE_CACHE"):
        yield Path(os.environ["LORAPLACE_CACHE"])
        return
    path = tmp_path_factory.mktemp("loraplace-cache")
    os.environ["LORAPLACE_CACHE"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("LORAPLACE_CACHE", None)


def _recipe_key() -> str:
    import torch

    import loraplace.builtin.markov as markov
    import loraplace.builtin.pretrain as pretrain

    h = hashlib.sha256(torch.__version__.encode())
    for mod in (markov, pretrain):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_markov_dir(loraplace_cache, pytestconfig) -> Path:
    """The pretrained tiny-markov directory in this session's cache (pretrained once)."""
    from loraplace.builtin import BUILTIN_MODELS, builtin_model_dir, cache_dir

    spec = BUILTIN_MODELS["tiny-markov"]
    final = cache_dir() / "models" / f"tiny-markov-{spec.version}"
    pytest_cache = getattr(pytestconfig, "cache", None)
    keep = None
    if pytest_cache is not None and not os.environ.get("LORAPLACE_TEST_FRESH"):
        keep = Path(pytest_cache.mkdir("loraplace-tiny-markov")) / _recipe_key()
        if not final.exists() and (keep / spec.info_file).is_file():
            shutil.copytree(keep, final)
    path = builtin_model_dir("tiny-markov")
    if keep is not None and not keep.exists():
        for old in keep.parent.iterdir():  # one kept copy: the current recipe's
            shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(path, keep)
    return path
