"""Importance probes: scores per (layer, role) from a few batches, before any training.

Reading a stored probe (``ProbeResult``, ``SCORES``) imports no torch; the functions that
compute scores load it on first use.
"""

from loraplace.probe.result import SCORES, ProbeResult, ScoreInfo

__all__ = ["SCORES", "ProbeResult", "ScoreInfo", "pick_batches", "probe", "probe_model"]


def __getattr__(name: str):
    if name in ("pick_batches", "probe", "probe_model"):
        from loraplace.probe import scores

        return getattr(scores, name)
    raise AttributeError(f"module 'loraplace.probe' has no attribute {name!r}")
