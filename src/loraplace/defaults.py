"""The default study: what ``loraplace run`` runs with no study file.

It is the packaged ``default_study.yaml``, read here. ``examples/default_study.yaml`` is
a copy (a link would break where checkouts cannot hold links), and
``tests/test_study.py`` fails when the two differ by a byte. The seed study's three
placements (PEFT suffix semantics, so ``seed-attention`` also adapts ``mlp.c_proj``), the
true attention-only placement and the zero-shot baseline, 3 seeds each, on the built-in
tiny GPT-2 (its weights ship with the package) and its synthetic target mixture.
Right-sized to 120 steps for a fresh clone's first ``loraplace run`` of about 150 s on 2
idle cores, while the placements still separate as they did at 250 steps (measured:
docs/benchmark.md).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

DEFAULT_STUDY_FILE = "default_study.yaml"  # package data of ``loraplace``


def default_study_config() -> dict[str, Any]:
    """A fresh copy of the default study's raw config, read from the packaged file."""
    text = (files("loraplace") / DEFAULT_STUDY_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)
