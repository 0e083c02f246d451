"""Bounds on every numeric setting of a study, checked after the schema and before any write.

The schema says what type a key holds; these say which values make sense, so that
``train.steps: -5`` or ``train.batch_size: 0`` is one line at load time instead of a
``done`` run with negative token counts or a store full of ``failed`` runs. The study
name becomes a directory under ``runs/``, so it must be one path component.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from loraplace.errors import UserError
from loraplace.metrics import ACCURACY, EVAL_LOSS, EVAL_PPL, TASK_PREFIX, default_goal, task_metric

# numpy's RandomState and torch's generators both take seeds in 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1
DEVICES = ("cpu", "cuda", "mps", "auto")


def _fail(source: str, key: str, value: Any, want: str) -> UserError:
    return UserError(f"{source}: key {key!r} must be {want} (got {value!r})")


def _at_least(source: str, key: str, value: Any, low: float, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not math.isfinite(value) or value < low:
        want = "a positive number" if low > 0 else f"a finite number >= {low:g}"
        if isinstance(value, int) and low == 1:
            want = "a positive integer"
        raise _fail(source, key, value, want)


def _seed(source: str, key: str, value: int) -> None:
    if not 0 <= value <= SEED_MAX:
        raise _fail(source, key, value, f"an integer from 0 to {SEED_MAX} (2**32 - 1)")


def check_name(source: str, name: str) -> None:
    """The study name is a directory under runs/: one path component, nothing that climbs."""
    bad = not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0")
    if bad:
        raise UserError(
            f"{source}: study name {name!r} is not usable as a directory name under runs/: "
            "name it with letters, digits, '-', '_' or '.' and no '/' (it labels the study)"
        )


def check_bounds(study, source: str = "study") -> None:
    """Raise UserError naming the first setting out of its bounds."""
    check_name(source, study.name)
    t = study.train
    for key in ("steps", "batch_size", "grad_accum"):
        _at_least(source, f"train.{key}", getattr(t, key, 1), 1)
    _at_least(source, "train.block_size", t.block_size, 2)  # next-token loss needs 2 tokens
    _at_least(source, "train.epochs", t.epochs, 1e-12, optional=True)
    for lr in t.lr if isinstance(t.lr, list) else [t.lr]:
        _at_least(source, "train.lr", lr, 0)
    for key in ("warmup_steps", "weight_decay", "grad_clip"):
        _at_least(source, f"train.{key}", getattr(t, key), 0)
    if not 0 <= t.lora_dropout < 1:
        raise _fail(source, "train.lora_dropout", t.lora_dropout, "in [0, 1)")
    for key in ("diverge_factor", "diverge_rise"):
        if not getattr(t, key, 2) > 1:
            raise _fail(source, f"train.{key}", getattr(t, key), "above 1")
    _seed(source, "train.split_seed", t.split_seed)
    _check_test_fraction(study, source)
    _at_least(source, "eval.every", study.eval.every, 0)
    _at_least(source, "eval.batch_size", study.eval.batch_size, 1)
    _at_least(source, "eval.max_blocks", study.eval.max_blocks, 1, optional=True)
    _at_least(source, "threads", study.threads, 1, optional=True)
    if study.workers != "auto":
        _at_least(source, "workers", study.workers, 1, optional=True)
    for seed in study.seeds:
        _seed(source, "seeds", seed)
    for rank in study.ranks:
        _at_least(source, "rank", rank, 1)
    alphas = study.alpha if isinstance(study.alpha, list) else [study.alpha]
    for alpha in alphas:
        _at_least(source, "alpha", alpha, 1e-12, optional=True)
    if study.probe is not None:
        _seed(source, "probe.seed", study.probe.seed)


# The least share of the data a split may leave to training: below it the test (and val)
# splits take (nearly) every example, and a run trains on a handful without a word.
MIN_TRAIN_SHARE = 0.1


def _check_test_fraction(study, source: str) -> None:
    """train.test_fraction is a share like data.val_fraction: in [0, 1), and the two
    together leave at least MIN_TRAIN_SHARE of the examples to train on."""
    test, val = study.train.test_fraction, study.data.val_fraction
    if not 0 <= test < 1:
        raise _fail(source, "train.test_fraction", test, "in [0, 1) (0: no test split)")
    if test > 0 and 1 - test - val < MIN_TRAIN_SHARE:
        raise UserError(
            f"{source}: train.test_fraction {test:g} and data.val_fraction {val:g} leave "
            f"{max(0.0, 1 - test - val):.0%} of the examples to train on (at least "
            f"{MIN_TRAIN_SHARE:.0%} needed): lower train.test_fraction (0.1 is usual)"
        )


def bound_warnings(study) -> list[str]:
    """Settings that are allowed but almost surely not meant."""
    lrs = study.train.lr if isinstance(study.train.lr, list) else [study.train.lr]
    if 0 in lrs:
        return ["train.lr is 0: the adapters will not move from their initialisation"]
    return []


def check_device(device: str) -> None:
    """The study's device exists here (the driver loads the model on it before any run)."""
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(
            f"unknown train.device {device!r}: use one of cpu, cuda, cuda:N, mps or auto"
        )
    import torch

    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError(
                f"train.device is {device!r} but this torch ({torch.__version__}) sees no CUDA "
                "GPU: use train.device=cpu (or auto), or install a CUDA build of torch"
            )
        if index and int(index) >= n:
            raise UserError(f"train.device {device!r}: this machine has {n} CUDA GPU(s)")
    mps = getattr(torch.backends, "mps", None)
    if kind == "mps" and not (mps and mps.is_available()):
        raise UserError("train.device is 'mps' but MPS is not available here: use cpu or auto")


def selectable_metrics(study) -> list[str]:
    """The validation metrics every trained run of ``study`` stores, that selection may read.

    eval_loss always; with eval.tasks that read the study's own val examples (not retain
    tasks, which measure forgetting), each task:<name> and their mean, accuracy.
    """
    out = [EVAL_LOSS, EVAL_PPL]
    tasks = [t for t in study.eval.tasks if not t.retain]
    if tasks:
        out += [ACCURACY, *(task_metric(t.name) for t in tasks)]
    return out


def check_select(study, source: str = "study") -> None:
    """``select:`` reads a metric the runs will store, in that metric's own direction."""
    sel = study.select
    if sel is None:
        return
    metrics = selectable_metrics(study)
    if sel.by not in metrics:
        # "answer" for "task:answer": match on the bare task name, suggest the full one.
        full = {m.removeprefix(TASK_PREFIX): m for m in metrics}
        near = difflib.get_close_matches(sel.by.removeprefix(TASK_PREFIX), list(full), 1, 0.5)
        hint = f' (did you mean "{full[near[0]]}"?)' if near else ""
        raise UserError(
            f"{source}: select.by {sel.by!r} is a metric no run of this study stores{hint}: "
            f"use one of {', '.join(metrics)} (task metrics need eval.tasks)"
        )
    # goal is a check, not a choice: a loss is always minimised and an accuracy always
    # maximised, so a goal against the metric's direction would select the worst setting
    # and the report would still call it the best. It is refused rather than obeyed.
    want = default_goal(sel.by)
    if sel.goal is not None and sel.goal != want:
        raise UserError(
            f"{source}: select.goal {sel.goal!r} contradicts select.by {sel.by!r}, which is "
            f"better when {'lower' if want == 'min' else 'higher'}: use goal: {want} or leave "
            "goal out"
        )
