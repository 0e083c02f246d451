"""The default study: what ``loraplace run`` runs with no study file.

The seed study's three placements (PEFT suffix semantics, so ``seed-attention`` also
adapts ``mlp.c_proj``), the true attention-only placement and the zero-shot baseline,
3 seeds each, on the built-in tiny GPT-2 (its weights ship with the package) and its
synthetic target mixture. Right-sized to 120 steps for a fresh clone's first
``loraplace run`` of about 150 s on 2 idle cores, while the placements still separate as
they did at 250 steps (measured: docs/benchmark.md). ``examples/default_study.yaml`` is the same
study as a file.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_STUDY: dict[str, Any] = {
    "name": "default",
    "model": "tiny-markov",
    "dataset": "markov-mix",
    "retain": "auto",  # the built-in source process: the forgetting metric
    "placements": ["seed-full", "seed-attention", "seed-ffn", "attention"],
    "rank": 8,
    "alpha": 16,
    "seeds": [0, 1, 2],
    "zero_shot": True,
    "train": {
        "steps": 120,  # right-sized: the main job in <= 150 s; see docs/benchmark.md
        "batch_size": 16,
        "block_size": 128,
        "lr": 2e-3,  # 1e-2 closes ~8 % more of the gap but triples the seed spread
        "schedule": "cosine",
        "warmup_steps": 10,
        "grad_clip": 1.0,
        "precision": "auto",  # bf16 autocast where the CPU has native bf16, else fp32
        "device": "cpu",
    },
    "eval": {"every": 40, "batch_size": 64},
}


def default_study_config() -> dict[str, Any]:
    """A fresh copy of the default study's raw config."""
    return copy.deepcopy(DEFAULT_STUDY)
