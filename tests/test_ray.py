"""The Ray executor on a real local Ray cluster (one per module: start-up costs ~10 s).

Runs of the studies named "crash", "doomed" and "hold" wait at a gate in the worker
(installed by Ray's worker_process_setup_hook) until the test opens it, so a SIGKILL or
a Ctrl-C reliably lands mid-run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from run_fixtures import tiny_study

from loraplace.assets import Assets
from loraplace.cli import run_cli
from loraplace.driver import StudyInterrupted, prepare_study, run_study
from loraplace.errors import UserError
from loraplace.executors.local import LocalExecutor
from loraplace.executors.ray_executor import (
    RayExecutor,
    _check_reachable,
    ray_session,
    worker_shape,
)
from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.store import Store
from loraplace.study import validate_study

# Whole studies end to end: `pytest -m "not slow"` skips them.
pytestmark = pytest.mark.slow

HOME_RAY = Path.home() / ".ray"
torch.set_num_threads(1)  # as in the Ray workers: one thread per reserved CPU


def _worker_setup(gate_dir: str) -> None:
    """Runs in every Ray worker before any task: installs the run gate."""
    import os
    import time
    from pathlib import Path

    import loraplace.executors.local as local

    real_train_run = local.train_run

    def gated(spec, *args, **kwargs):
        if spec.study in ("crash", "doomed", "hold"):
            gate = Path(gate_dir)
            (gate / f"{spec.study}.{spec.run_id}.{os.getpid()}").touch()
            deadline = time.monotonic() + 60
            while not (gate / f"{spec.study}.go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return real_train_run(spec, *args, **kwargs)

    local.train_run = gated


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU local cluster for the module; yields the gate directory."""
    ray = pytest.importorskip("ray")  # only the cluster tests need Ray installed
    home_before = sorted(p.name for p in HOME_RAY.iterdir()) if HOME_RAY.exists() else None
    auth_before = {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")}
    # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
    tmp = Path(tempfile.mkdtemp(prefix="lpray"))
    gate = tmp / "gate"
    gate.mkdir()
    # The workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    t0 = time.perf_counter()
    hook = lambda: _worker_setup(str(gate))  # noqa: E731
    with ray_session(
        None,
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(tmp / "ray"),
        runtime_env={"worker_process_setup_hook": hook},
    ) as started:
        assert started
        print(f"ray start-up: {time.perf_counter() - t0:.1f} s")
        yield gate
    shutil.rmtree(tmp, ignore_errors=True)
    # Nothing left in ~ and the environment as it was (the token lived in env vars only).
    home_after = sorted(p.name for p in HOME_RAY.iterdir()) if HOME_RAY.exists() else None
    assert home_after == home_before
    assert {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")} == auth_before


@pytest.fixture(scope="module")
def executor(cluster):
    """One executor for the module: its workers (and loaded models) outlive each run()."""
    with RayExecutor(num_cpus_per_run=1, keep_workers=True) as ex:
        yield ex


def _study(tmp: Path, name: str):
    """The tiny model, 2 placements x 2 seeds = 4 runs, no zero-shot."""
    cfg = tiny_study(tmp, name=name, zero_shot=False, out=str(tmp / name))
    return validate_study(cfg)


def _collect(executor, specs: list[RunSpec]) -> dict[str, RunResult]:
    results: list[RunResult] = []
    executor.run(specs, results.append)
    assert sorted(r.run_id for r in results) == sorted(s.run_id for s in specs)
    return {r.run_id: r for r in results}


# The metrics that depend only on the spec (not on timing or the machine).
DETERMINISTIC = (
    "eval_loss",
    "eval_tokens",
    "zero_shot_loss",
    "trainable_params",
    "total_params",
    "steps",
    "train_tokens",
)


def test_ray_gives_the_same_metrics_as_in_process(executor, tmp_path):
    study = _study(tmp_path, "same")
    assets = Assets()
    specs = prepare_study(study, assets).specs
    assert len(specs) == 4
    t0 = time.perf_counter()
    local = _collect(LocalExecutor(assets), specs)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    remote = _collect(executor, specs)
    t_ray = time.perf_counter() - t0
    print(f"4 runs: in-process {t_local:.1f} s, ray {t_ray:.1f} s ({executor.shape})")
    assert executor.shape is not None and executor.shape.workers == 2
    for rid, res in remote.items():
        assert res.status == "done", res.error
        assert {k: res.metrics[k] for k in DETERMINISTIC} == {
            k: local[rid].metrics[k] for k in DETERMINISTIC
        }
        for curve in ("train_loss", "eval_loss", "lr"):
            assert res.curves[curve] == local[rid].curves[curve]
        assert res.manifest["worker"]["executor"] == "ray"
        assert res.manifest["worker"]["pid"] != os.getpid()
        assert res.manifest["worker"]["torch_threads"] == 1  # = the CPUs it reserved
    # Sanity on the numbers themselves: 2 layers at r=2, and training helped.
    full = next(r for r in remote.values() if r.metrics["trainable_params"] == 2 * 2 * 512)
    assert full.metrics["eval_loss"] < full.metrics["zero_shot_loss"]


def test_a_worker_whose_model_files_differ_from_the_drivers_fails_the_run(executor, tmp_path):
    (spec,) = prepare_study(_study(tmp_path, "same"), Assets()).specs[:1]
    assert set(spec.fingerprints) == {"model", "data"}
    bad = dataclasses.replace(spec, fingerprints={**spec.fingerprints, "model": "0" * 16})
    (result,) = _collect(executor, [bad]).values()
    assert result.status == "failed"
    assert f"the model {spec.model!r} on worker host" in result.error
    assert f"(fingerprint {spec.fingerprints['model']} != {'0' * 16})" in result.error


@pytest.mark.parametrize("what", ["retain", "test"])
def test_a_worker_checks_the_retain_and_test_fingerprints_too(what, tmp_path):
    """In-process (no cluster): the worker's check before a run, on the splits beside data."""
    from run_fixtures import write_text

    from loraplace.executors.ray_executor import RunWorker

    retain = write_text(tmp_path / "retain.txt", seed=1)
    cfg = tiny_study(tmp_path, name="fp", retain=str(retain))
    cfg["train"]["test_fraction"] = 0.2
    spec = prepare_study(validate_study(cfg), Assets()).specs[0]
    assert set(spec.fingerprints) == {"model", "data", "retain", "test"}
    worker = RunWorker()
    assert worker._fingerprint_mismatch(spec) is None
    bad = dataclasses.replace(spec, fingerprints={**spec.fingerprints, what: "0" * 16})
    error = worker._fingerprint_mismatch(bad)
    ref = str(retain) if what == "retain" else spec.dataset
    assert error is not None and error.startswith(f"the {what} {ref!r} on worker host")
    assert f"(fingerprint {spec.fingerprints[what]} != {'0' * 16})" in error


def _wait_for(pattern: str, gate: Path, n: int = 1, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(gate.glob(pattern))
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} in {gate} after {timeout} s")


def test_a_worker_killed_mid_run_is_retried_and_nothing_is_lost_or_duplicated(
    cluster, executor, tmp_path
):
    gate = cluster
    study = _study(tmp_path, "crash")
    killed: list[tuple[str, int]] = []

    def kill_first_worker() -> None:
        first = _wait_for("crash.*", gate)[0]
        _, run_id, pid = first.name.split(".")
        os.kill(int(pid), signal.SIGKILL)
        killed.append((run_id, int(pid)))
        (gate / "crash.go").touch()

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    assert executor.max_retries == 2
    outcome = run_study(study, executor=executor)
    killer.join(timeout=5)
    assert len(killed) == 1
    run_id, pid = killed[0]

    # The killed run started twice, in two different processes; the others once.
    attempts = {}
    for p in gate.glob("crash.*.*"):
        attempts.setdefault(p.name.split(".")[1], []).append(int(p.name.split(".")[2]))
    assert sorted(len(v) for v in attempts.values()) == [1, 1, 1, 2]
    assert len(attempts[run_id]) == 2 and pid in attempts[run_id]
    assert (outcome.total, outcome.ran, outcome.statuses) == (4, 4, {"done": 4})
    with Store(study.out_dir, create=False, writer=False) as store:
        runs = store.runs(outcome.study_id)
        metrics = store.metrics()
    assert sorted(r["run_id"] for r in runs) == sorted(attempts)
    assert all(r["status"] == "done" for r in runs)
    assert all(metrics[r["run_id"]]["steps"] == 6 for r in runs)


def test_a_run_whose_worker_dies_more_than_max_retries_times_comes_back_failed(
    cluster, executor, tmp_path
):
    gate = cluster
    specs = prepare_study(_study(tmp_path, "doomed"), Assets()).specs[:1]

    def kill() -> None:
        first = _wait_for("doomed.*", gate)[0]
        os.kill(int(first.name.split(".")[2]), signal.SIGKILL)
        (gate / "doomed.go").touch()

    threading.Thread(target=kill, daemon=True).start()
    executor.max_retries = 0
    try:
        (result,) = _collect(executor, specs).values()
    finally:
        executor.max_retries = 2
    assert (result.run_id, result.status) == (specs[0].run_id, "failed")
    assert result.error.startswith("its worker process died in all 1 attempt(s)")
    assert len(list(gate.glob("doomed.*.*"))) == 1  # not retried


def test_ctrl_c_stops_the_workers_and_marks_the_runs_in_flight_interrupted(
    cluster, executor, tmp_path
):
    gate = cluster
    study = _study(tmp_path, "hold")
    pids: list[int] = []

    def interrupt() -> None:
        started = _wait_for("hold.*", gate, n=2)  # both workers are mid-run
        pids.extend(int(p.name.split(".")[2]) for p in started)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(StudyInterrupted, match="2 run"):
        run_study(study, executor=executor)
    with Store(study.out_dir, create=False, writer=False) as store:
        statuses = sorted(r["status"] for r in store.runs())
    assert statuses == ["interrupted", "interrupted", "pending", "pending"]
    # The workers were killed, not left training (or holding the gate) on the cluster.
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
    assert executor.shape is None  # closed: the next run() starts fresh workers
    (gate / "hold.go").touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_loraplace_run_with_executor_ray_runs_the_study_and_resumes(cluster, tmp_path, capsys):
    study = tmp_path / "study.yaml"
    cfg = tiny_study(tmp_path, zero_shot=False, placements=["seed-ffn"], seeds=[0])
    study.write_text(yaml.safe_dump(cfg))
    assert run_cli(["run", str(study), "--executor", "ray"]) == 0
    assert "ran 1 of 1 runs" in capsys.readouterr().out
    with Store(tmp_path / "out", create=False, writer=False) as store:
        (run,) = store.runs()
        assert run["status"] == "done"
        assert store.manifest(run["run_id"])["worker"]["executor"] == "ray"
    assert run_cli(["run", str(study), "--executor", "ray"]) == 0
    assert "ran 0 of 1 runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "dask"], "unknown executor 'dask'"),
        (["--address", "auto"], "need --executor ray"),
        (["--gpus-per-run", "1"], "need --executor ray"),
    ],
)
def test_loraplace_run_rejects_bad_executor_options(args, message, capsys):
    assert run_cli(["run", *args]) == 2
    assert message in capsys.readouterr().err


def test_local_cluster_uses_token_auth_without_writing_a_token_to_home(cluster):
    """The fixture's teardown checks the rest: ~/.ray and RAY_AUTH_* are as before."""
    raylet = pytest.importorskip("ray._raylet")
    if not hasattr(raylet, "AuthenticationMode"):
        pytest.skip("this Ray has no token authentication")
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN
    assert os.environ.get("RAY_AUTH_TOKEN")  # the one-off token, in the environment only
    assert not (HOME_RAY / "auth_token").exists()


def _spec(device: str = "cpu") -> RunSpec:
    return RunSpec(
        study="s",
        placement_name="p",
        kind="lora",
        model="m",
        dataset="d",
        seed=0,
        train=TrainSettings(device=device),
    )


@pytest.mark.parametrize(
    "device, resources, cpus, gpus, expected",
    [
        # (spec device, cluster, per-run CPUs, per-run GPUs) -> (CPUs, GPUs, workers)
        ("cpu", {"CPU": 8}, 1, None, (1, 0, 5)),  # capped by the 5 specs
        ("cpu", {"CPU": 4}, 2, None, (2, 0, 2)),
        ("cpu", {"CPU": 16, "GPU": 2}, 1, None, (1, 0, 5)),  # cpu runs leave GPUs alone
        ("auto", {"CPU": 16, "GPU": 2}, 1, None, (1, 1, 2)),
        ("cuda", {"CPU": 16, "GPU": 2}, 1, 0.5, (1, 0.5, 4)),  # two runs share a GPU
        ("auto", {"CPU": 4}, 1, None, (1, 0, 4)),  # auto on a CPU cluster: CPU runs
    ],
)
def test_plan_workers(device, resources, cpus, gpus, expected):
    shape = worker_shape(
        [_spec(device)] * 5, resources, num_cpus_per_run=cpus, num_gpus_per_run=gpus
    )
    assert (shape.num_cpus, shape.num_gpus, shape.workers) == expected


@pytest.mark.parametrize(
    "device, resources, cpus, gpus, message",
    [
        ("cuda", {"CPU": 8}, 1, None, "has no GPUs"),
        ("cpu", {"CPU": 2}, 4, None, "lower the resources per run"),
        ("cuda", {"CPU": 8, "GPU": 1}, 1, 2, "lower the resources per run"),
    ],
)
def test_worker_shape_rejects_what_the_cluster_cannot_run(device, resources, cpus, gpus, message):
    with pytest.raises(UserError, match=message):
        worker_shape([_spec(device)], resources, num_cpus_per_run=cpus, num_gpus_per_run=gpus)


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(UserError, match=r"pip install 'loraplace\[ray\]'"):
        RayExecutor()


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),  # refused: fails in < 1 s
        ("nonsense", "is not auto or HOST:PORT"),
        ("head:port", "is not auto or HOST:PORT"),
    ],
)
def test_a_bad_address_is_one_clear_line_not_minutes_of_retries(address, message):
    with pytest.raises(UserError, match=message):
        _check_reachable(address)
