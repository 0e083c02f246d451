"""Executors move RunSpecs to workers and RunResults back to the driver."""

from loraplace.executors.base import Executor, NullProgress, ResultCallback, RunProgress
from loraplace.executors.local import Assets, LocalExecutor

__all__ = ["Assets", "Executor", "LocalExecutor", "NullProgress", "ResultCallback", "RunProgress"]
