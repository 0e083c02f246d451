"""The test split: scored beside validation, read by the report's headline numbers only.

Validation numbers (``eval_loss``) pick the settings; these ``test_*`` numbers judge them.
A test Blocks is the dataset loaded with ``holdout="test"``: its ``val`` rows are the test
split, so it is evaluated exactly like validation (same kernels, masks and floor).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from loraplace.data import Blocks
from loraplace.metrics import TEST_FLOOR, TEST_LOSS, TEST_TOKENS, TEST_ZERO_SHOT_LOSS
from loraplace.train.evaluate import EvalResult, evaluate


def test_metrics(
    net: torch.nn.Module | None,
    test: Blocks | None,
    base: EvalResult | None,
    eval_kw: dict,
    nll_fn: Callable | None = None,
) -> dict[str, float]:
    """test_loss, test_tokens, test_zero_shot_loss and test_floor; {} without a test split.

    net: the adapted model, or None for a zero-shot run (whose test numbers are ``base``).
    base: the base model's result on the test split.
    """
    if test is None:
        return {}
    if net is None:
        assert base is not None, "a zero-shot run's test numbers are the baseline's"
        ev = base
    else:
        ev = evaluate(net, test.val, **eval_kw, nll_fn=nll_fn, scored=test.scored("val"))
    out = {TEST_LOSS: ev.loss, TEST_TOKENS: float(ev.tokens)}
    if base is not None:
        out[TEST_ZERO_SHOT_LOSS] = base.loss
    if test.val_oracle_nll is not None:  # synthetic data: the floor on exactly these tokens
        out[TEST_FLOOR] = float(test.val_oracle_nll[: eval_kw.get("max_blocks")].mean())
    return out
