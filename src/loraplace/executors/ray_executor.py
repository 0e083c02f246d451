"""The Ray executor: runs spread over a Ray cluster, results back to the driver.

Each worker is a Ray actor that wraps a ``LocalExecutor``, so it keeps what it loaded
(base model, token blocks, zero-shot evaluation) across the runs it is given, exactly as
the in-process executor does. Actors rather than plain tasks because an actor holds its
resources for its lifetime: a worker that loaded the model onto its GPU keeps that GPU,
whereas a reused task worker may be handed a different GPU after CUDA is initialised
(Ray gives GPU tasks a fresh process per call for that reason, which would reload the
model every run). The driver hands each idle worker the next spec, one at a time.

Worker failure: a worker process that dies mid-run (SIGKILL, the OOM killer, a lost
node) is restarted by Ray and the run is retried, up to ``max_retries`` times; after
that the run comes back ``failed``. A Python exception inside a run is not retried: it
is deterministic, and ``LocalExecutor.run_one`` already turns it into a ``failed``
result. Run ids are content hashes and each spec is handed out once, so a retried run
is still exactly one row in the store.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from loraplace.errors import UserError
from loraplace.executors.base import NullProgress, ResultCallback, RunProgress
from loraplace.runs import RunResult, RunSpec

_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_INSTALL_HINT = "the ray executor needs Ray: pip install 'loraplace[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a UserError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(_INSTALL_HINT) from None
    return ray


def _refresh_ray_auth_config() -> None:
    # Ray caches RAY_AUTH_MODE in its C++ config when it is imported; a change to the
    # environment is seen only after this refresh (Ray's own _enable_token_auth does it).
    try:
        # Ray's _raylet.pyi stub lists only the id classes; the compiled module has these.
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
    except ImportError:  # a Ray without token authentication: nothing to refresh
        return

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def ephemeral_token_auth() -> Iterator[None]:
    """Token authentication with a one-off token held in the environment, not in ~.

    Ray (2.60+) starts a new local cluster with token authentication and, unless a
    token is configured, writes one to ``~/.ray/auth_token``. For a cluster that lives
    only as long as this process, a random token in ``RAY_AUTH_TOKEN`` gives the same
    protection and leaves nothing behind; the processes Ray starts inherit it. When the
    user has configured authentication (any ``RAY_AUTH_*`` variable), it is left alone.
    """
    if any(v in os.environ for v in _AUTH_VARS):
        yield
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    _refresh_ray_auth_config()
    try:
        yield
    finally:
        for v in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            os.environ.pop(v, None)
        _refresh_ray_auth_config()


@contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[bool]:
    """Connect to Ray for the duration of the block; yields True when it started Ray here.

    address: None starts a local cluster (``ray.init(address="local")``); "auto" joins
        the cluster in RAY_ADDRESS or the one ``ray start`` last started on this machine;
        "HOST:PORT" joins that cluster. When Ray is already initialised in this process
        (a test fixture, a notebook) the existing connection is used and left open.
    init_kwargs: passed to ``ray.init`` (num_cpus, include_dashboard, _temp_dir, ...).
    """
    ray = import_ray()
    if ray.is_initialized():
        yield False
        return
    local = address in (None, "local")
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if local:  # a private cluster starts faster without the dashboard's processes
        kw["include_dashboard"] = False
    kw.update(init_kwargs)
    if address is not None and address not in ("local", "auto"):
        _check_reachable(address)
    with ephemeral_token_auth() if local else nullcontext():
        auth_error = getattr(ray.exceptions, "AuthenticationError", ())
        try:
            ray.init(address="local" if local else address, **kw)
        except auth_error:
            raise UserError(
                f"the Ray cluster at {address} wants its token: export RAY_AUTH_MODE=token "
                "and RAY_AUTH_TOKEN=<token> (`ray get-auth-token` on the head node prints it)"
            ) from None
        except (ConnectionError, ValueError) as exc:
            where = address or "a local cluster"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = "start one with `ray start --head` or check --address HOST:PORT"
            if not local and not any(v in os.environ for v in _AUTH_VARS):
                # A token-protected cluster refuses a driver without one, and Ray reports
                # it as a failed connection after ~20 s of retries.
                hint = (
                    "if the cluster uses token authentication, export RAY_AUTH_MODE=token "
                    "and RAY_AUTH_TOKEN=<token> (`ray get-auth-token` on the head prints it)"
                )
            raise UserError(f"cannot connect to Ray at {where}: {first}; {hint}") from None
        try:
            yield True
        finally:
            ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A UserError at once when nothing listens at HOST:PORT (Ray itself retries for minutes)."""

    if "://" in address:  # ray:// (Ray Client) and other schemes: leave them to Ray
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not auto or HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one there "
            "with `ray start --head --port PORT`, or check the host and port"
        ) from None


# --------------------------------------------------------------------------- the worker
class RunWorker:
    """One Ray actor: a LocalExecutor (and its loaded model) that runs one spec at a time.

    ``poll`` runs on a second actor thread while ``run_one`` trains, so the driver can
    show the step, loss and throughput of every run in flight.
    """

    def __init__(self, peak_flops: float | None = None, threads: int | None = None):
        """threads: torch intra-op threads, matching the CPUs the worker reserved."""
        import torch

        from loraplace.executors.local import LocalExecutor

        if threads:
            # Ray exports OMP_NUM_THREADS only as the actor starts, after a pooled worker
            # process may already have imported torch: set the thread count explicitly.
            torch.set_num_threads(threads)
        self._executor = LocalExecutor(peak_flops=peak_flops)
        self._latest: tuple[int, int, float, float] | None = None

    def run_one(self, spec: RunSpec) -> RunResult:
        self._latest = None
        mismatch = self._fingerprint_mismatch(spec)
        if mismatch:
            result = RunResult(run_id=spec.run_id, status="failed", error=mismatch)
        else:
            result = self._executor.run_one(spec, _LatestStep(self))
        result.manifest.setdefault("worker", _worker_info())
        return result

    def _fingerprint_mismatch(self, spec: RunSpec) -> str | None:
        """Why this node's model or data differ from what the driver resolved, if they do.

        On a multi-node cluster a path or a built-in model can resolve to different
        files on different nodes; the run would then train on something other than what
        its id says. Errors loading them are left to ``run_one`` to report.
        """
        assets = self._executor.assets
        found: dict[str, Any] = {}
        try:
            if "model" in spec.fingerprints:
                found["model"] = lambda: assets.model_fingerprint(spec.model)
            if "data" in spec.fingerprints:
                found["data"] = lambda: assets.spec_blocks(spec).fingerprint
            if "retain" in spec.fingerprints and spec.retain_dataset:
                found["retain"] = lambda: assets.spec_blocks(spec, spec.retain_dataset).fingerprint
            if "test" in spec.fingerprints and spec.train.test_fraction > 0:
                found["test"] = lambda: assets.spec_blocks(spec, holdout="test").fingerprint
            for what, compute in found.items():
                here, wanted = compute(), spec.fingerprints[what]
                if here != wanted:
                    ref: str | None = spec.model if what == "model" else spec.dataset
                    if what == "retain":
                        ref = spec.retain_dataset
                    return (
                        f"the {what} {ref!r} on worker host {_hostname()} differs from the "
                        f"driver's (fingerprint {here} != {wanted}): give every node the "
                        "same files (a shared directory or the same hub revision)"
                    )
        except Exception:  # a node that cannot load them: run_one reports why
            return None
        return None

    def poll(self) -> tuple[int, int, float, float] | None:
        """The latest (step, steps, loss, tokens/s) of the run in progress, once."""
        latest, self._latest = self._latest, None
        return latest

    def pid(self) -> int:
        return os.getpid()


class _LatestStep(NullProgress):
    """Keeps only the latest step event: the display shows nothing older."""

    def __init__(self, worker: RunWorker):
        self.worker = worker

    def step(self, spec: RunSpec, step: int, steps: int, loss: float, tokens_per_s: float) -> None:
        self.worker._latest = (step, steps, loss, tokens_per_s)


def _hostname() -> str:
    return socket.gethostname()


def _worker_info() -> dict[str, Any]:
    """Where a run executed; torch threads matter for reading its tokens/s."""
    import ray
    import torch

    ctx = ray.get_runtime_context()
    return {
        "executor": "ray",
        "host": _hostname(),
        "node_id": ctx.get_node_id(),
        "pid": os.getpid(),
        "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- the driver side
@dataclass(frozen=True)
class WorkerShape:
    """Resources of one worker and how many workers the cluster fits."""

    num_cpus: float
    num_gpus: float
    workers: int


def wants_gpu(specs: Sequence[RunSpec]) -> bool:
    """True when a spec's device can use a CUDA GPU (``cuda``, ``cuda:N`` or ``auto``)."""
    return any(s.train.device == "auto" or s.train.device.startswith("cuda") for s in specs)


def worker_shape(
    specs: Sequence[RunSpec],
    resources: dict[str, float],
    *,
    num_cpus_per_run: float,
    num_gpus_per_run: float | None,
    max_workers: int | None = None,
) -> WorkerShape:
    """How many workers to start, with what resources, on a cluster with ``resources``.

    num_gpus_per_run: None = one GPU per run when the runs ask for cuda/auto and the
        cluster has GPUs, else none; fractions share a GPU between runs.
    """
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    if num_gpus_per_run is None:
        if gpus == 0 and any(s.train.device.startswith("cuda") for s in specs):
            raise UserError(
                "the study asks for train.device=cuda but the Ray cluster has no GPUs: "
                "add GPU nodes or set train.device=auto"
            )
        num_gpus_per_run = 1.0 if gpus > 0 and wants_gpu(specs) else 0.0
    if num_cpus_per_run < 0 or num_gpus_per_run < 0:
        raise UserError("resources per run must be >= 0 (--num-cpus-per-run, --num-gpus-per-run)")
    fits = []
    if num_cpus_per_run > 0:
        fits.append(int(cpus // num_cpus_per_run))
    if num_gpus_per_run > 0:
        fits.append(int(gpus // num_gpus_per_run))
    slots = min(fits) if fits else int(cpus) or 1
    if slots == 0:
        raise UserError(
            f"one run needs {num_cpus_per_run:g} CPU and {num_gpus_per_run:g} GPU but the Ray "
            f"cluster has {cpus:g} CPU and {gpus:g} GPU: lower the resources per run or add nodes"
        )
    workers = min(slots, len(specs), max_workers or slots)
    return WorkerShape(num_cpus_per_run, num_gpus_per_run, max(workers, 0))


class RayExecutor:
    """Runs specs on a Ray cluster, one worker actor per concurrent run."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_run: float = 1,
        num_gpus_per_run: float | None = None,
        max_retries: int = 2,
        *,
        peak_flops: float | None = None,
        max_workers: int | None = None,
        keep_workers: bool = False,
        poll_s: float = 0.5,
        init_kwargs: dict[str, Any] | None = None,
    ):
        """
        address: None (start a local cluster), "auto" or "HOST:PORT".
        num_gpus_per_run: None = 1 when the cluster has GPUs and runs use cuda/auto.
        max_retries: times a run is retried after its worker process died.
        peak_flops: device peak (FLOP/s) for MFU; measured on each worker when None.
        max_workers: cap on concurrent runs (default: as many as the cluster fits).
        keep_workers: keep the workers (and their loaded models) and the Ray connection
            from one ``run`` call to the next until ``close()``; for callers that run one
            spec at a time (a search), where a fresh worker costs seconds per call.
        poll_s: seconds between progress polls of the runs in flight.
        init_kwargs: extra ``ray.init`` arguments when this executor connects.
        """
        import_ray()  # fail early, with the install hint, when Ray is missing
        self.address = address
        self.num_cpus_per_run = num_cpus_per_run
        self.num_gpus_per_run = num_gpus_per_run
        self.max_retries = max_retries
        self.peak_flops = peak_flops
        self.max_workers = max_workers
        self.keep_workers = keep_workers
        self.poll_s = poll_s
        self.init_kwargs = dict(init_kwargs or {})
        self.shape: WorkerShape | None = None  # of the current workers, for reports and tests
        self._session = ExitStack()
        self._connected = False
        self._workers: list[Any] = []

    @classmethod
    def for_study(
        cls,
        study: Any,
        address: str | None = None,
        num_cpus_per_run: float | None = None,
        num_gpus_per_run: float | None = None,
        max_retries: int = 2,
    ) -> RayExecutor:
        """The executor ``loraplace run --executor ray`` uses for a validated Study.

        num_cpus_per_run: default the study's ``threads`` (CPU threads per run), else 1.
        """
        peak = getattr(study, "peak_tflops", None)
        return cls(
            address=address,
            num_cpus_per_run=num_cpus_per_run or getattr(study, "threads", None) or 1,
            num_gpus_per_run=num_gpus_per_run,
            max_retries=max_retries,
            peak_flops=peak * 1e12 if peak else None,
        )

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress | None = None,
    ) -> None:
        """Execute every spec on the cluster; ``on_result`` once per spec, as they finish.

        On KeyboardInterrupt the workers are killed (their runs stop at once) and the
        interrupt propagates: the runs without a result are the caller's to mark.
        """
        if not specs:
            return
        ray = import_ray()
        done = False
        try:
            workers = self._start_workers(ray, specs)
            self._dispatch(ray, workers, specs, on_result, progress or NullProgress())
            done = True
        finally:
            if not (done and self.keep_workers):
                self.close()  # free the cluster's CPUs/GPUs now, also on Ctrl-C

    def close(self) -> None:
        """Kill the workers and leave Ray (shutting it down when this executor started it)."""
        if self._workers and import_ray().is_initialized():
            ray = import_ray()
            for w in self._workers:
                ray.kill(w, no_restart=True)
        self._workers = []
        self.shape = None
        self._connected = False
        self._session.close()

    def _start_workers(self, ray: Any, specs: Sequence[RunSpec]) -> list[Any]:
        """Connect if needed and return the workers for these specs (reused when they fit)."""
        if not self._connected:
            self._session.enter_context(ray_session(self.address, **self.init_kwargs))
            self._connected = True
        shape = worker_shape(
            specs,
            ray.cluster_resources(),
            num_cpus_per_run=self.num_cpus_per_run,
            num_gpus_per_run=self.num_gpus_per_run,
            max_workers=self.max_workers,
        )
        old = self.shape
        if old is None or (old.num_cpus, old.num_gpus) != (shape.num_cpus, shape.num_gpus):
            for w in self._workers:
                ray.kill(w, no_restart=True)
            self._workers = []
        if len(self._workers) < shape.workers:
            actor_cls = ray.remote(RunWorker).options(
                num_cpus=shape.num_cpus,
                num_gpus=shape.num_gpus,
                max_restarts=-1,  # bounded in practice: each run retries max_retries times
                max_task_retries=self.max_retries,
                max_concurrency=2,  # run_one, and poll alongside it
            )
            threads = max(1, int(shape.num_cpus)) if shape.num_cpus > 0 else None
            for _ in range(shape.workers - len(self._workers)):
                self._workers.append(actor_cls.remote(self.peak_flops, threads))
        self.shape = WorkerShape(shape.num_cpus, shape.num_gpus, len(self._workers))
        return list(self._workers)

    def _dispatch(
        self,
        ray: Any,
        workers: list[Any],
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress,
    ) -> None:
        """Hand each idle worker the next spec; report results and progress as they come."""
        todo = collections.deque(specs)
        idle = list(workers)
        busy: dict[Any, tuple[Any, RunSpec]] = {}  # ObjectRef -> (worker, spec)
        next_poll = time.monotonic() + self.poll_s
        while todo or busy:
            while idle and todo:
                worker, spec = idle.pop(), todo.popleft()
                call = worker.run_one.options(max_task_retries=self.max_retries)
                busy[call.remote(spec)] = (worker, spec)
                progress.run_started(spec)
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=self.poll_s)
            for ref in ready:
                worker, spec = busy.pop(ref)
                idle.append(worker)
                on_result(self._result(ray, ref, spec))
            if busy and time.monotonic() >= next_poll:
                self._poll(ray, busy, progress)
                next_poll = time.monotonic() + self.poll_s

    def _result(self, ray: Any, ref: Any, spec: RunSpec) -> RunResult:
        """The run's RunResult; a worker that died more than max_retries times -> failed."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError):
                n = self.max_retries + 1
                error = f"its worker process died in all {n} attempt(s): {first}"
            else:
                error = f"{type(exc).__name__}: {first}"
            return RunResult(
                run_id=spec.run_id,
                status="failed",
                error=error,
                manifest={"traceback": str(exc), "worker": {"executor": "ray"}},
            )

    def _poll(self, ray: Any, busy: dict[Any, tuple[Any, RunSpec]], progress: RunProgress) -> None:
        """Forward each in-flight run's latest step to ``progress`` (best effort)."""
        # Not retried: a poll of a dead worker fails at once instead of queueing.
        polls = {w.poll.options(max_task_retries=0).remote(): spec for w, spec in busy.values()}
        ready, _ = ray.wait(list(polls), num_returns=len(polls), timeout=0.2)
        for ref in ready:
            try:
                latest = ray.get(ref)
            except ray.exceptions.RayError:  # a worker restarting: its run reports later
                continue
            if latest is not None:
                progress.step(polls[ref], *latest)
