"""LoRA variants trained end to end: DoRA's exact count, and PiSSA leaves the base intact."""

from __future__ import annotations

import pytest
import torch
from run_fixtures import tiny_study

from loraplace.analysis import read_study_data
from loraplace.assets import Assets
from loraplace.driver import run_study
from loraplace.study import validate_study

# Whole studies end to end: `pytest -m "not slow"` skips them.
pytestmark = pytest.mark.slow

torch.set_num_threads(1)


def test_dora_and_pissa_runs(tmp_path):
    cfg = tiny_study(
        tmp_path,
        placements=["seed-ffn"],
        seeds=[0],
        zero_shot=False,
        use_dora=[False, True],
        init_lora_weights=[True, "pissa"],
    )
    assets = Assets()
    model, _ = assets.model(cfg["model"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_study(validate_study(cfg), assets=assets)
    runs = {r.placement: r for r in read_study_data(tmp_path / "out").runs}
    assert set(runs) == {
        "seed-ffn@lora,init-true",
        "seed-ffn@lora,init-pissa",
        "seed-ffn@dora,init-true",
        "seed-ffn@dora,init-pissa",
    }
    assert all(r.status == "done" for r in runs.values())
    # 2 layers of c_fc (32 -> 128) at r=2: LoRA 2 * 2 * 160; DoRA + 2 * 128 magnitudes.
    counts = {k: r.metrics["trainable_params"] for k, r in runs.items()}
    assert counts["seed-ffn@lora,init-true"] == counts["seed-ffn@lora,init-pissa"] == 640
    assert counts["seed-ffn@dora,init-true"] == counts["seed-ffn@dora,init-pissa"] == 640 + 256
    losses = {r.metrics["eval_loss"] for r in runs.values()}
    assert len(losses) == 4  # four different trainings
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # PiSSA's edit undone
