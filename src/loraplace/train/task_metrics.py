"""Task metrics beside loss: exact match on greedy generations, and multiple choice.

A task reads the val examples of instruction data ({prompt_ids, reference, choices}; see
data/sft.py) and returns an accuracy in [0, 1], stored as the metric ``task:<name>``.

- ``exact_match``: greedy generation (transformers' ``generate``, ``do_sample=False``) from
  the prompt, cut at EOS, at the first stop string and at ``max_new_tokens``; correct when
  its normalised text equals the normalised reference. Normalisation: case-folded,
  whitespace collapsed, surrounding spaces and full stops stripped.
- ``choice``: log-likelihood multiple choice, as lm-evaluation-harness's ``acc``: the
  option whose tokens (each option tokenised on its own) have the highest summed
  log-probability after the prompt wins; correct when it is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from loraplace.errors import UserError
from loraplace.metrics import (
    ACCURACY,
    RETAIN_ACCURACY,
    RETAIN_PREFIX,
    TASK_PREFIX,
    metric_on_test,
)


@dataclass(frozen=True)
class TaskMetricSettings:
    """One task of ``eval.tasks``."""

    name: str
    kind: Literal["exact_match", "choice", "lm-eval"] = "exact_match"
    max_new_tokens: int = 16  # generation length cap (exact_match)
    stop: tuple[str, ...] = ("\n",)  # generation ends at the first of these (exact_match)
    limit: int | None = None  # score at most this many val examples; None = all
    batch_size: int = 64  # prompts per generate call (exact_match)
    # lm-eval (train/lm_eval_task.py): the harness's task, custom task dir, metric, shots
    task: str | None = None
    include_path: str | None = None
    metric: str = "acc"
    num_fewshot: int | None = None
    retain: bool = False  # a forgetting measure: stored as retain:<name>, not in accuracy


def task_settings(tasks) -> list[TaskMetricSettings]:
    """TaskMetricSettings from a RunSpec's task dicts (lists become tuples)."""
    return [TaskMetricSettings(**{**t, "stop": tuple(t.get("stop", ("\n",)))}) for t in tasks]


def normalize(text: str) -> str:
    """Case-folded, whitespace collapsed, surrounding spaces and full stops stripped."""
    return " ".join(text.casefold().split()).strip(" .")


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text up to the first stop string (all of it when none occurs)."""
    ends = [i for s in stop if s and (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


def _context_of(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def _batches(examples: list[dict], batch_size: int, room: int | None):
    """Indices of examples in batches, prompts of similar length together (less padding).

    room: the longest prompt whose generation the context does not cut short; a longer
    one goes alone, so that a batch-mate never shortens its generation (None: no limit).
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["prompt_ids"]))
    fits = [i for i in order if room is None or len(examples[i]["prompt_ids"]) <= room]
    for start in range(0, len(fits), batch_size):
        yield fits[start : start + batch_size]
    for i in order:
        if room is not None and len(examples[i]["prompt_ids"]) > room:
            yield [i]


def left_padded(prompts: list[list[int]], pad: int, eos: int, device):
    """(input ids, attention mask) of prompts left-padded to the longest; an empty prompt
    starts from EOS, as a document start."""
    prompts = [p or [eos] for p in prompts]
    width = max(map(len, prompts))
    x = torch.full((len(prompts), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(prompts), width), dtype=torch.int64)
    for i, p in enumerate(prompts):
        x[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return x.to(device), mask.to(device)


@torch.no_grad()
def greedy_answers(
    model, tokenizer, examples: list[dict], task: TaskMetricSettings, device
) -> list[str]:
    """Each example's greedy generation, cut at EOS and at the first stop string.

    Prompts go through ``generate`` in batches of ``task.batch_size``, left-padded with an
    attention mask (transformers derives the position ids from it) and the KV cache: the
    same greedy tokens as one prompt at a time, up to float rounding.
    """
    from loraplace.data.packing import eos_id_of

    eos = eos_id_of(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    context = _context_of(model)
    room = None if context is None else context - task.max_new_tokens
    answers: dict[int, str] = {}
    for batch in _batches(examples, task.batch_size, room):
        x, mask = left_padded([examples[i]["prompt_ids"] for i in batch], pad, eos, device)
        new = task.max_new_tokens
        if context is not None:
            new = min(new, context - x.shape[1])
        out = model.generate(
            input_ids=x,
            attention_mask=mask,
            max_new_tokens=max(1, new),
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for i, ids in zip(batch, out[:, x.shape[1] :].tolist(), strict=True):
            ids = ids[: ids.index(eos)] if eos in ids else ids
            answers[i] = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), task.stop)
    return [answers[i] for i in range(len(examples))]


def exact_match(model, tokenizer, examples: list[dict], task: TaskMetricSettings, device) -> float:
    """Share of examples whose greedy generation matches the reference after normalising."""
    answers = greedy_answers(model, tokenizer, examples, task, device)
    hits = [
        normalize(a) == normalize(ex["reference"]) for a, ex in zip(answers, examples, strict=True)
    ]
    return sum(hits) / len(examples)


@torch.no_grad()
def choice(model, tokenizer, examples: list[dict], task: TaskMetricSettings, device) -> float:
    """Share of examples whose most likely option (summed log-prob) is the reference."""
    from loraplace.train.evaluate import token_nll

    correct = 0
    for ex in examples:
        options = ex["choices"]
        prompt = ex["prompt_ids"]
        seqs = [prompt + tokenizer(c, add_special_tokens=False)["input_ids"] for c in options]
        width = max(map(len, seqs))
        x = torch.zeros((len(seqs), width), dtype=torch.int64)
        scored = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
            scored[i, max(0, len(prompt) - 1) : len(s) - 1] = True  # the option's tokens
        nll = token_nll(model, x.to(device), scored.to(device)).cpu()  # 0 where not scored
        logp = -nll.sum(dim=1)
        correct += options[int(logp.argmax())] == ex["reference"]
    return correct / len(examples)


KINDS = {"exact_match": exact_match, "choice": choice}


def spec_task_metrics(model, tokenizer, spec, blocks, test, device) -> dict[str, float]:
    """A run's task metrics on its val examples, and as test_* on its test split (if any)."""
    tasks = task_settings(spec.eval_tasks)
    out = run_tasks(model, tokenizer, blocks.val_examples, tasks, device)
    own = [t for t in tasks if t.kind != "lm-eval"]  # an lm-eval task has its own data
    if test is not None and own:
        held = run_tasks(model, tokenizer, test.val_examples, own, device)
        out.update({metric_on_test(k): v for k, v in held.items()})
    return out


def check_examples(tasks, examples: list[dict] | None, where: str = "the val split") -> None:
    """What the tasks need of their examples, as a UserError: the driver checks this on
    the val and test examples before any run trains, and each run again on its own."""
    own = [t for t in tasks if t.kind != "lm-eval"]  # an lm-eval task reads its own data
    if own and not examples:
        raise UserError("eval.tasks need instruction data (prompt-completion or messages)")
    for task in own:
        chosen = (examples or [])[: task.limit] if task.limit else examples or []
        if task.kind != "choice":
            continue
        for ex in chosen:
            if not ex["choices"]:
                raise UserError(
                    f"task {task.name!r} is a choice task, but an example of {where} has no "
                    "choices: give every example a choices list (data.fields may map it), "
                    "or use kind exact_match"
                )
            if ex["reference"] not in ex["choices"]:
                raise UserError(
                    f"task {task.name!r}: an example's completion {ex['reference']!r} is not "
                    f"among its choices {ex['choices']}: the completion must be the right choice"
                )


def run_tasks(
    model, tokenizer, examples: list[dict] | None, tasks: list[TaskMetricSettings], device
) -> dict[str, float]:
    """{task:<name>: accuracy, ..., accuracy: their mean} on the val examples; retain
    tasks as retain:<name> and retain_accuracy (lm-eval tasks read their own data)."""
    if not tasks:
        return {}
    check_examples(tasks, examples)
    examples = examples or []
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        for task in tasks:
            if task.kind == "lm-eval":
                from loraplace.train.lm_eval_task import lm_eval_score

                prefix = RETAIN_PREFIX if task.retain else TASK_PREFIX
                out[prefix + task.name] = lm_eval_score(model, tokenizer, task, device)
                continue
            chosen = examples[: task.limit] if task.limit else examples
            out[TASK_PREFIX + task.name] = KINDS[task.kind](model, tokenizer, chosen, task, device)
    finally:
        if was_training:
            model.train()
    for prefix, mean in ((TASK_PREFIX, ACCURACY), (RETAIN_PREFIX, RETAIN_ACCURACY)):
        values = [v for k, v in out.items() if k.startswith(prefix)]
        if values:
            out[mean] = sum(values) / len(values)
    return out
