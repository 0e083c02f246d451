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


def lm_eval_score(model, tokenizer, task, device) -> float:
    """The harness's ``task.metric`` for ``task.task`` (the 'none' filter) on ``model``."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
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
    manager = TaskManager(include_path=task.include_path) if task.include_path else None
    if task.task not in (manager or TaskManager()).all_tasks:
        where = f" in {task.include_path}" if task.include_path else ""
        raise UserError(
            f"lm-eval has no task {task.task!r}{where}: check eval.tasks task / include_path"
        )
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
