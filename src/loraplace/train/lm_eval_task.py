"""The ``lm-eval`` task kind: an lm-evaluation-harness task scored on the adapted model.

Through the harness's own Python API (``lm_eval.simple_evaluate`` on an ``HFLM`` that wraps
the trained network and its tokenizer), so the number is the harness's, prompt format,
few-shot and metric included. Custom tasks are YAML files in ``include_path`` (read by
``lm_eval.tasks.TaskManager``); the data may be local (``dataset_path: json`` with
``dataset_kwargs: {data_files: ...}``). Needs the optional extra ``loraplace[eval]``.
"""

from __future__ import annotations

import logging

from loraplace.errors import UserError

MISSING = "kind lm-eval needs lm-evaluation-harness: pip install 'loraplace[eval]'"


def _task_manager(task):
    """The harness's task index (with the task's include_path); the task must be in it."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=task.include_path)  # indexing takes seconds: once
    if task.task not in manager.all_tasks:
        where = f" in {task.include_path}" if task.include_path else ""
        raise UserError(
            f"lm-eval has no task {task.task!r}{where}: check eval.tasks task / include_path"
        )
    return manager


def check_lm_eval_task(task) -> None:
    """Build ``task.task`` as the harness will, data included, before any run trains: a task
    whose data cannot be read (the hub while offline, a missing file) would otherwise fail
    every run after its training."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError(MISSING) from None
    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
    manager = _task_manager(task)
    try:
        manager.load([task.task])
    except Exception as exc:  # the harness and datasets raise many kinds; all mean "no data"
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(
            f"lm-eval task {task.task!r} cannot be loaded ({type(exc).__name__}: {reason}): "
            "its data must be readable now (the Hugging Face hub needs a network; a custom "
            "task can read local files with dataset_path: json), or drop it from eval.tasks"
        ) from None


def lm_eval_score(model, tokenizer, task, device) -> float:
    """The harness's ``task.metric`` for ``task.task`` (the 'none' filter) on ``model``."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError(MISSING) from None
    for name in ("lm-eval", "lm_eval"):  # its per-request progress lines drown the run's
        logging.getLogger(name).setLevel(logging.WARNING)
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        backend="causal",
        batch_size=task.batch_size,
        device=str(device),
    )
    manager = _task_manager(task)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task.task],
        task_manager=manager,
        num_fewshot=task.num_fewshot,
        limit=task.limit,
        log_samples=False,
        bootstrap_iters=0,
        verbosity="WARNING",
    )
    results = out["results"][task.task]
    key = f"{task.metric},none"
    if key not in results:
        found = sorted(k.split(",")[0] for k in results if "," in k and "_stderr" not in k)
        raise UserError(
            f"lm-eval task {task.task!r} reports no {task.metric!r}: set metric to one of "
            f"{', '.join(found)}"
        )
    return float(results[key])
