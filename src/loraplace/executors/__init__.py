"""Executors move RunSpecs to workers and RunResults back to the driver.

``Assets`` and ``LocalExecutor`` load lazily: importing this package (the CLI does, for
every verb) must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraplace.executors.base import Executor, NullProgress, ResultCallback, RunProgress

if TYPE_CHECKING:
    from loraplace.assets import Assets
    from loraplace.executors.local import LocalExecutor

__all__ = ["Assets", "Executor", "LocalExecutor", "NullProgress", "ResultCallback", "RunProgress"]


def __getattr__(name: str):
    if name == "Assets":  # its home is loraplace.assets; kept here for old imports
        from loraplace.assets import Assets

        return Assets
    if name == "LocalExecutor":
        from loraplace.executors.local import LocalExecutor

        return LocalExecutor
    raise AttributeError(f"module 'loraplace.executors' has no attribute {name!r}")
