"""The driver: validate a study, resolve it, register its runs, run the rest, store results.

Order matters: everything that can fail because of the user (the study file, the model,
the data, placements that match nothing) is checked before the store is opened, so a
bad study writes nothing. The driver is the store's only writer: it marks a run
``running`` when an executor starts it and writes each result in one transaction, so a
crash loses at most the run in flight and re-running the same study finishes the rest.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loraplace.adapters import save_result_adapter
from loraplace.errors import UserError
from loraplace.executors.base import Executor
from loraplace.executors.pool import PoolExecutor
from loraplace.identity import blocks_args
from loraplace.lock import busy_error, live_holder
from loraplace.metrics import EVAL_LOSS
from loraplace.outdir import check_writable
from loraplace.runs import RunResult, RunSpec
from loraplace.sinks import open_sinks
from loraplace.store import (
    FINISHED,
    Store,
    check_store_file,
    model_budget_key,
    resolve_store_path,
)
from loraplace.study import (
    ProbeConfig,
    Study,
    StudyModel,
    budget_params,
    expand_models,
    retain_dataset,
    wants_probe,
)
from loraplace.study.bounds import bound_warnings, check_device
from loraplace.study.halving import rung_steps

if TYPE_CHECKING:  # torch loads with the executor, when a study actually runs
    from loraplace.assets import Assets


class StudyInterrupted(Exception):
    """Ctrl-C or a signal stopped the study; the run in flight is marked ``interrupted``."""


class StopRequested(KeyboardInterrupt):
    """A signal other than Ctrl-C (SIGTERM from a scheduler or `kill`) stops the study."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class PreparedStudy:
    """A study resolved into its runs, ready to register."""

    study: Study
    specs: list[RunSpec]
    warnings: list[str] = field(default_factory=list)
    probe: dict | None = None  # the study's probe result (ProbeResult.to_json), if it has one
    budget: int | None = None  # the study's budget in parameters, if it has one
    model_budgets: dict[str, int] = field(default_factory=dict)  # across models: each one's


@dataclass
class StudyOutcome:
    study_id: str
    store_path: str
    total: int  # runs in the study
    skipped: int  # already finished before this invocation
    ran: int  # runs executed by this invocation
    statuses: dict[str, int] = field(default_factory=dict)  # status -> runs, after


class StudyDisplay:
    """What the driver tells a display; every method is optional (a no-op here)."""

    def start(self, prepared: PreparedStudy, todo: list[RunSpec], skipped: int) -> None:
        pass

    def run_started(self, spec: RunSpec) -> None:
        pass

    def step(self, spec: RunSpec, step: int, steps: int, loss: float, tokens_per_s: float) -> None:
        pass

    def run_finished(self, spec: RunSpec, result: RunResult) -> None:
        pass

    def stop(self) -> None:
        pass


def prepare_study(study: Study, assets: Assets) -> PreparedStudy:
    """Load the model(s) and data, fingerprint them and resolve every placement.

    A study across models is prepared model by model (each loaded once, in turn), so its
    runs come out ordered by model and the executor reloads no model between them.
    Raises UserError for a missing model or dataset and for a placement matching nothing.
    """
    for lm_task in (t for t in study.eval.tasks if t.kind == "lm-eval"):
        from loraplace.train.lm_eval_task import check_lm_eval_task

        check_lm_eval_task(lm_task)  # its data is read now, not after the first run trains
    budgets: dict[str, int] = {}  # model label -> its budget in parameters
    probes: list = []

    def one_model(m: StudyModel) -> dict:
        sub = study.for_model(m)
        t = sub.train_settings()
        model, _ = assets.model(sub.model, t.device, sub.quantize, t.precision)
        tfps = {task.dataset: _data_fingerprints(sub, task, assets) for task in sub.tasks}
        probe = None
        if wants_probe(sub):  # scored on the first task's train blocks (one model only)
            task = sub.tasks[0]
            blocks = assets.blocks(task.dataset, **_data_kw(sub, task)).train
            probe = _probe(sub, model, blocks)
            probes.append(probe)
        if sub.budget is not None:
            budgets[m.name or m.ref] = budget_params(sub, model)
        return dict(
            target=model,
            fingerprints=assets.model_fingerprints(sub.model),
            scores=probe.importance if probe is not None else None,
            task_fingerprints=tfps,
        )

    specs, warnings = expand_models(study, one_model)
    unique = _unique_runs(specs, warnings)
    return PreparedStudy(
        study=study,
        specs=unique,
        warnings=bound_warnings(study) + warnings,
        probe=probes[0].to_json() if probes else None,
        # A study across models matches the budget on each: the first model's is the
        # study's budget (as before), every model's is stored beside it.
        budget=next(iter(budgets.values()), None),
        model_budgets=budgets if len(budgets) > 1 else {},
    )


def _unique_runs(specs: list[RunSpec], warnings: list[str]) -> list[RunSpec]:
    """Each run once: two labels for the same resolved placement are one run (a warning);
    two tasks whose runs coincide read the same data, and one task would vanish (an error)."""
    first: dict[str, RunSpec] = {}
    for s in specs:
        was = first.setdefault(s.run_id, s)
        if was is s:
            continue
        if s.task != was.task:  # the task is no part of a run's id: the data hashed alike
            raise UserError(
                f"tasks {was.task!r} and {s.task!r} read the same data ({s.dataset} has "
                f"the content of {was.dataset}): their runs are the same runs and one task "
                "would be dropped: keep one entry"
            )
        warnings.append(
            f"{s.placement_name} (seed {s.seed}) is the same run as {was.placement_name}: "
            "it runs once"
        )
    return list(first.values())


def _data_kw(study: Study, task) -> dict:
    # The same arguments a run's own blocks are read with (Assets.spec_blocks).
    return blocks_args(study.model, study.train_settings(), task.text_field, study.data_settings())


def _data_fingerprints(study: Study, task, assets: Assets) -> dict[str, str]:
    """Content hashes of one task's data, its retain set and its test split (if any)."""
    kw = _data_kw(study, task)
    blocks = assets.blocks(task.dataset, **kw)
    out = {"data": blocks.fingerprint}
    if study.eval.dataset:  # the separate validation file is part of every run's identity
        blocks = assets.blocks(study.eval.dataset, **{**kw, "test_fraction": 0.0})
        out["eval"] = blocks.fingerprint
    own = [t for t in study.eval.tasks if t.kind != "lm-eval"]  # lm-eval reads its own data
    if own and blocks.val_examples is None:  # the other kinds read the val examples
        raise UserError(
            f"eval.tasks need instruction data (prompt-completion or messages), but "
            f"{blocks.name} is raw text: give such a dataset or drop eval.tasks"
        )
    if own:  # what every run would find only after training: checked once, here
        from loraplace.train.task_metrics import check_examples

        check_examples(own, blocks.val_examples)
    retain = retain_dataset(study, task.dataset)
    if retain:  # the retain set is read whole: no test split carved out of it
        out["retain"] = assets.blocks(retain, **{**kw, "test_fraction": 0.0}).fingerprint
    if kw["test_fraction"] > 0:
        test = assets.blocks(task.dataset, **kw, holdout="test")
        out["test"] = test.fingerprint
        if own and test.val_examples:  # the runs score the own tasks on it too
            check_examples(own, test.val_examples, "the test split")
    return out


def _probe(study: Study, model, train_blocks):
    """The study's importance probe on its own model and train blocks (deterministic)."""
    import torch

    from loraplace.probe.scores import pick_batches, probe_model

    cfg = study.probe or ProbeConfig()
    state = torch.random.get_rng_state()
    try:
        batches = pick_batches(
            train_blocks, batches=cfg.batches, batch_size=cfg.batch_size, seed=cfg.seed
        )
        meta = {
            "model": study.model,
            "dataset": study.tasks[0].dataset,
            "block_size": int(train_blocks.shape[1]),
            **cfg.model_dump(),
        }
        return probe_model(model, batches, meta=meta)
    finally:
        torch.random.set_rng_state(state)


def run_study(
    study: Study,
    *,
    executor: Executor | None = None,
    assets: Assets | None = None,
    display: StudyDisplay | None = None,
    command: str | None = None,
) -> StudyOutcome:
    """Run every unfinished run of ``study`` and store its results.

    Raises StudyInterrupted on Ctrl-C after marking the runs in flight ``interrupted``.
    """
    if study.threads:
        import torch

        torch.set_num_threads(study.threads)
    from loraplace.assets import Assets

    assets = assets or Assets()
    display = display or StudyDisplay()
    check_output_dir(study)
    prepared = prepare_study(study, assets)  # every user error surfaces here, before any write
    if study.select is not None and study.select.prune == "halving":
        _check_halving(study, executor)
    sinks = open_sinks(study.sinks.model_dump(), study.name)
    command = command or " ".join(shlex.quote(a) for a in ["loraplace", *sys.argv[1:]])

    store = Store(study.out_dir)
    try:
        todo, skipped = _register(store, study, prepared, command)
        halving = study.select is not None and study.select.prune == "halving"
        if executor is None:
            executor = _default_executor(study, assets, len(todo), halving)
        if halving:
            executor = _halving(study, prepared.specs, store, executor)
        rec = _Recorder(study, store, todo, sinks, display)
        display.start(prepared, todo, skipped)
        try:
            executor.run(todo, rec.result, rec)
        except KeyboardInterrupt as exc:
            reason = getattr(exc, "reason", "Ctrl-C")
            for rid in rec.in_flight:
                store.mark(rid, "interrupted", f"stopped by {reason}")
            raise StudyInterrupted(
                f"interrupted by {reason}: {len(rec.in_flight)} run(s) marked interrupted"
            ) from None
        finally:
            display.stop()
            for sink in sinks:
                sink.close()
        return StudyOutcome(
            study_id=study.study_id,
            store_path=str(store.path),
            total=len(prepared.specs),
            skipped=skipped,
            ran=rec.ran,
            statuses=store.status_counts(study.study_id),
        )
    finally:
        store.close()


def _register(
    store: Store, study: Study, prepared: PreparedStudy, command: str
) -> tuple[list[RunSpec], int]:
    """Write the study, its runs, probe and budget; returns (runs still to do, skipped)."""
    sid = study.study_id
    store.add_study(sid, study.name, study.model_dump(mode="json"), command)
    store.add_runs(sid, prepared.specs)
    if prepared.probe is not None:
        store.save_probe(sid, prepared.probe)
    if prepared.budget is not None:
        store.set_meta(f"budget:{sid}", str(prepared.budget))
    for label, n in prepared.model_budgets.items():
        store.set_meta(model_budget_key(sid, label), str(n))
    status = {r["run_id"]: r["status"] for r in store.runs(sid)}
    halving = study.select is not None and study.select.prune == "halving"
    finished = (*FINISHED, "pruned") if halving else FINISHED
    todo = [s for s in prepared.specs if status.get(s.run_id) not in finished]
    return todo, len(prepared.specs) - len(todo)


class _Recorder:
    """The executor's progress events and results, into the store (the single writer)."""

    def __init__(self, study: Study, store: Store, todo: list[RunSpec], sinks, display):
        self.study, self.store, self.sinks, self.display = study, store, sinks, display
        self.by_id = {s.run_id: s for s in todo}
        self.in_flight: set[str] = set()
        self.ran = 0

    def run_started(self, spec: RunSpec) -> None:  # a store write, before the run trains
        self.store.mark_running(spec.run_id)
        self.in_flight.add(spec.run_id)
        self.display.run_started(spec)

    def step(self, spec, step, steps, loss, tokens_per_s) -> None:
        self.display.step(spec, step, steps, loss, tokens_per_s)

    def result(self, result: RunResult) -> None:
        spec = self.by_id[result.run_id]
        self.store.save_result(result)  # one transaction: status, metrics, curves, manifest
        self.in_flight.discard(result.run_id)
        _save_adapter(self.study, self.store, self.study.study_id, spec, result)
        for sink in self.sinks:  # copies only: the store above is the source of truth
            sink.log(spec, result)
        if result.status != "paused":  # a halving rung is not a run: count each run once
            self.ran += 1
        self.display.run_finished(spec, result)


def _cores() -> int:
    """The CPUs this process may run on (a container's or taskset's limit included)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(study: Study, runs: int) -> int:
    """How many runs execute side by side for ``study.workers`` (1: in this process)."""
    if study.workers is None or runs < 2:
        return 1
    if study.workers != "auto":
        return min(study.workers, runs)
    cores = _cores()
    if study.train.device not in ("cpu", "auto") or study.quantize:
        return 1  # one accelerator is not shared; quantized kernels keep their own threads
    from loraplace.device import resolve_device  # torch

    return 1 if resolve_device(study.train.device).type != "cpu" else min(cores, runs)


def _default_executor(study: Study, assets: Assets, runs: int, halving: bool) -> Executor:
    """In-process, or worker processes side by side when the study asks for them."""
    from loraplace.executors.local import LocalExecutor

    peak = study.peak_tflops * 1e12 if study.peak_tflops else None
    keep = study.save != "none"
    workers = 1 if halving else worker_count(study, runs)
    if workers == 1:
        return LocalExecutor(assets, peak_flops=peak, keep_adapters=keep)
    threads = study.threads or max(1, _cores() // workers)
    return PoolExecutor(workers, threads, peak_flops=peak, keep_adapters=keep)


def _check_halving(study: Study, executor: Executor | None) -> None:
    """What successive halving cannot do, as user errors before anything is written."""
    from loraplace.executors.local import LocalExecutor

    if executor is not None and not isinstance(executor, LocalExecutor):
        raise UserError("prune: halving runs in-process only: drop --executor ray")
    if study.train.epochs is not None:
        raise UserError("prune: halving places rungs by steps: set train.steps, not train.epochs")
    if isinstance(study.workers, int) and study.workers > 1:
        raise UserError("prune: halving runs in-process only: drop workers (or set it to 1)")


def _halving(study: Study, specs: list[RunSpec], store: Store, inner: Executor) -> Executor:
    """The executor that runs the study's grid by successive halving, from the store's state."""
    from loraplace.executors.halving import HalvingExecutor, Record
    from loraplace.executors.local import LocalExecutor

    sel = study.select
    assert sel is not None and isinstance(inner, LocalExecutor)
    status = {r["run_id"]: r["status"] for r in store.runs()}
    ids = [s.run_id for s in specs]
    metrics = store.metrics(ids)
    records = {
        rid: Record(status.get(rid, "pending"), store.curves(rid), metrics.get(rid, {}))
        for rid in ids
    }
    return HalvingExecutor(
        inner,
        specs,
        rung_steps(study.train_settings().steps, sel.rungs, sel.reduction),
        reduction=sel.reduction,
        records=records,
        checkpoints=study.out_dir / "checkpoints",
        goal=sel.goal or "min",
    )


def _save_adapter(study: Study, store: Store, sid: str, spec: RunSpec, result: RunResult) -> None:
    """Write the run's trained adapter per the study's ``save`` mode (after its result)."""
    if result.adapter is None or study.save == "none":
        return

    done = {r["run_id"] for r in store.runs(sid) if r["status"] == "done" and r["kind"] == "lora"}
    losses = {rid: m[EVAL_LOSS] for rid, m in store.metrics(done).items() if EVAL_LOSS in m}
    save_result_adapter(study.out_dir, study.save, spec, result, losses)


def check_output_dir(study: Study) -> None:
    """An output path that is a file (not a directory) is a user error, caught before work."""
    path = study.out_dir
    if path.exists() and not path.is_dir() and path.suffix != ".db":
        raise UserError(f"output directory {path} is a file: choose another with --out DIR")
    check_writable(path, "output directory")
    check_device(study.train_settings().device)
    store_path = resolve_store_path(path)
    holder = live_holder(store_path)
    if holder is not None:  # fail before the model loads; Store takes the lock itself
        raise busy_error(store_path, holder)
    if store_path.exists():
        check_store_file(store_path)
