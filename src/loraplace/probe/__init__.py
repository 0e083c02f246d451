"""Importance probes: scores per (layer, role) from a few batches, before any training."""

from loraplace.probe.scores import SCORES, ProbeResult, ScoreInfo, pick_batches, probe, probe_model

__all__ = ["SCORES", "ProbeResult", "ScoreInfo", "pick_batches", "probe", "probe_model"]
