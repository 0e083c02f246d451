"""A grid study run by successive halving: pruned runs, rung decisions, resume mid-rung."""

from __future__ import annotations

import pytest
import torch
from run_fixtures import tiny_study

from loraplace.analysis.aggregate import summarize
from loraplace.analysis.read import read_study_data
from loraplace.analysis.selection import headline_view, select_settings
from loraplace.driver import StudyDisplay, StudyInterrupted, run_study
from loraplace.errors import UserError
from loraplace.run_table import run_end_rows
from loraplace.store import Store
from loraplace.study import validate_study

torch.set_num_threads(1)
LRS = [1e-3, 1e-2, 3e-2]
STEPS = 9  # rungs at ceil(9 / 9) = 1 and ceil(9 / 3) = 3 steps


class _Steps(StudyDisplay):
    """Records every trained (run, step); raises Ctrl-C when the ``stop``-th run starts."""

    def __init__(self, stop: int | None = None):
        self.trained: list[tuple[str, int]] = []
        self.started = 0
        self.stop_on = stop

    def run_started(self, spec):
        self.started += 1
        if self.started == self.stop_on:
            raise KeyboardInterrupt

    def step(self, spec, step, steps, loss, tokens_per_s):
        self.trained.append((spec.run_id, step))


def _study(tmp_path, out: str):
    cfg = tiny_study(tmp_path, out=str(tmp_path / out))
    cfg["train"].update(lr=LRS, steps=STEPS, warmup_steps=1)
    cfg["select"] = {"prune": "halving", "rungs": 2, "reduction": 3}
    return validate_study(cfg)


def _state(out) -> dict[str, tuple]:
    with Store(out, create=False, writer=False) as store:
        runs = store.runs(store.study()["study_id"])
        metrics = store.metrics()
        return {
            r["run_id"]: (r["placement"], r["seed"], r["status"], metrics.get(r["run_id"], {}))
            for r in runs
        }


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("halving")
    display = _Steps()
    run_study(_study(tmp, "a"), display=display)
    return tmp / "a", display.trained


def test_halving_prunes_two_of_three_settings_per_placement_at_the_first_rung(straight):
    out, trained = straight
    state = _state(out)
    by_label: dict[str, list[tuple]] = {}
    for placement, seed, status, m in state.values():
        by_label.setdefault(placement, []).append((seed, status, m))
    assert by_label.pop("zero-shot")[0][1] == "done"
    for base in ("seed-full", "seed-ffn"):
        labels = [f"{base}@lr{lr:g}" for lr in LRS]
        statuses = {lb: sorted(s for _, s, _ in by_label[lb]) for lb in labels}
        kept = [lb for lb in labels if statuses[lb] == ["done", "done"]]
        assert len(kept) == 1  # ceil(3 / 3) settings survive; the rest are pruned at step 1
        for lb in labels:
            if lb in kept:
                continue
            assert statuses[lb] == ["pruned", "pruned"]
            assert all(m["rung_steps"] == 1 and "eval_loss" not in m for _, _, m in by_label[lb])
        # the survivor had the lowest seed-mean rung loss at step 1, read from the curves
        with Store(out, create=False, writer=False) as store:
            means = {}
            for lb in labels:
                ids = [rid for rid, v in state.items() if v[0] == lb]
                means[lb] = sum(dict(store.curves(i)["eval_loss"])[1] for i in ids) / 2
        assert kept == [min(labels, key=means.get)]
    # 12 runs x 1 step, 4 survivors x 2 more steps to rung 3, then 4 x 6 to the end
    assert len(trained) == 12 * 1 + 4 * 2 + 4 * 6 == len(set(trained))


def test_pruned_runs_keep_partial_curves_and_never_enter_means(straight):
    out, _ = straight
    data = read_study_data(out)
    pruned = [r for r in data.runs if r.status == "pruned"]
    assert len(pruned) == 8
    with Store(out, create=False, writer=False) as store:
        for r in pruned:
            curves = store.curves(r.run_id)
            assert [s for s, _ in curves["train_loss"]] == [1]
            assert [s for s, _ in curves["eval_loss"]] == [0, 1]
    summary = summarize(data)
    assert {r.run_id for r in summary.excluded} == {r.run_id for r in pruned}
    for p in summary.placements:  # every mean is over the two done seeds of one setting
        assert p.loss.n == 2
        assert all(r.status == "done" for r in p.runs)
    selected = select_settings(data)
    headline = summarize(headline_view(data, selected, None))  # what the report's tables read
    assert {r.run_id for r in headline.excluded} == {r.run_id for r in pruned}
    chosen = {s.placement: s.chosen.label for s in selected}
    done = {r.placement_base: r.placement for r in data.runs if r.status == "done"}
    assert chosen == {b: lb for b, lb in done.items() if b != "zero-shot"}
    assert not list((out / "checkpoints").glob("*.pt"))  # finished and pruned: none left
    with Store(out, create=False, writer=False) as store:  # the run-end table says so too
        rows = {r.placement: r for r in run_end_rows(store, store.study()["study_id"])}
    assert sorted((r.done, r.pruned) for r in rows.values() if r.kind == "lora") == [
        *[(0, 2)] * 4,  # two losing settings per placement, both seeds pruned
        *[(2, 0)] * 2,  # one surviving setting per placement, both seeds done
    ]


def test_resume_mid_rung_trains_no_step_twice_and_ends_the_same(tmp_path, straight):
    out_a, trained_a = straight
    study = _study(tmp_path, "b")
    first = _Steps(stop=5)  # zero-shot, then 3 runs of rung 1; the 4th is stopped as it starts
    with pytest.raises(StudyInterrupted):
        run_study(study, display=first)
    mid = _state(tmp_path / "b")
    assert sorted(v[2] for v in mid.values()).count("paused") == 3
    second = _Steps()
    run_study(study, display=second)
    both = first.trained + second.trained
    assert len(both) == len(set(both))  # no (run, step) trained twice
    a, b = _by_label(out_a), _by_label(tmp_path / "b")  # model paths differ: so do run ids
    name_a = {rid: key for key, (rid, _, _) in a.items()}
    name_b = {rid: key for key, (rid, _, _) in b.items()}
    assert sorted((name_b[r], s) for r, s in both) == sorted((name_a[r], s) for r, s in trained_a)
    assert {k: v[1] for k, v in a.items()} == {k: v[1] for k, v in b.items()}
    for key, (_, status, m) in a.items():
        if status == "done":
            assert b[key][2]["eval_loss"] == m["eval_loss"]  # the same numbers, bit for bit


def test_halving_by_epochs_is_a_user_error_before_anything_is_written(tmp_path):
    """Rungs are step counts: a study that sets train.epochs cannot be halved."""
    cfg = tiny_study(tmp_path, out=str(tmp_path / "e"))
    cfg["train"].update(lr=LRS, epochs=1, warmup_steps=1)
    cfg["select"] = {"prune": "halving", "rungs": 2, "reduction": 3}
    with pytest.raises(UserError) as exc:
        run_study(validate_study(cfg), display=_Steps())
    assert str(exc.value) == (
        "prune: halving places rungs by steps: set train.steps, not train.epochs"
    )
    assert not (tmp_path / "e").exists()


def _by_label(out) -> dict[tuple, tuple]:
    return {(p, seed): (rid, status, m) for rid, (p, seed, status, m) in _state(out).items()}
