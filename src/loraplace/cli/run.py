"""``loraplace run [STUDY] [key=value ...]`` and ``loraplace status [DIR]``."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from loraplace.cli.app import app
from loraplace.driver import (
    PreparedStudy,
    StopRequested,
    StudyDisplay,
    StudyInterrupted,
    run_study,
)
from loraplace.errors import UserError
from loraplace.metrics import EVAL_LOSS
from loraplace.progress import StepLines
from loraplace.run_table import render_table, run_end_rows, table_caption
from loraplace.runs import RunResult, RunSpec
from loraplace.store import STORE_NAME, Store
from loraplace.study import load_study


class RichDisplay(StudyDisplay):
    """Two bars: the study (runs done / total, ETA) and the current run (step, loss, tok/s).

    Off a terminal (a log, CI) rich draws no bars: plain lines of the current run's step,
    loss, tokens/s and time left come instead, at most every 10 s (``progress.StepLines``).
    """

    def __init__(self, console: Console):
        self.console = console
        self.lines: StepLines | None = None
        if not console.is_terminal:
            self.lines = StepLines(
                lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
            )
        self.progress: Progress | None = None
        self.overall: TaskID | None = None
        self.current: TaskID | None = None
        # Each run's number in the counter, given at its first line: successive halving
        # reports a run again at each rung, and the counter must not pass the total.
        self.number: dict[str, int] = {}
        self.n_todo = 0
        self._last = 0.0

    def start(self, prepared: PreparedStudy, todo: list[RunSpec], skipped: int) -> None:
        study = prepared.study
        self.n_todo = len(todo)
        models = ", ".join(m.ref for m in study.model_list)
        self.console.print(
            f"study [bold]{escape(study.name)}[/] ({study.study_id}): {escape(models)} "
            f"on {escape(', '.join(t.dataset for t in study.tasks))}, {len(prepared.specs)} runs, "
            f"{skipped} already finished -> {escape(str(study.out_dir / STORE_NAME))}"
        )
        for w in prepared.warnings:
            self.console.print(f"[yellow]warning[/]: {escape(str(w))}")
        if not todo:
            return
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.overall = self.progress.add_task("study", total=len(todo), info="")
        self.current = self.progress.add_task("run", total=1, info="")
        self.progress.start()

    def run_started(self, spec: RunSpec) -> None:
        if self.lines is not None:
            self.lines.start(f"{_run_label(spec)} seed {spec.seed}")
        if self.progress is None or self.current is None:
            return
        steps = spec.train.steps if spec.kind != "zero-shot" else 1
        self.progress.reset(
            self.current,
            total=steps,
            description=f"{escape(_run_label(spec))} seed {spec.seed}",
            info="evaluating" if spec.kind == "zero-shot" else "",
        )

    def step(self, spec: RunSpec, step: int, steps: int, loss: float, tokens_per_s: float) -> None:
        if self.lines is not None:
            self.lines.step(step, steps, loss, tokens_per_s)
        now = time.monotonic()
        if (
            self.progress is None
            or self.current is None
            or (now - self._last < 0.2 and step < steps)
        ):
            return
        self._last = now
        self.progress.update(
            self.current,
            completed=step,
            total=steps,
            info=f"loss {loss:.4f}  {tokens_per_s:,.0f} tok/s",
        )

    def run_finished(self, spec: RunSpec, result: RunResult) -> None:
        number = self.number.setdefault(spec.run_id, len(self.number) + 1)
        m = result.metrics
        if result.status == "done":
            detail = f"eval loss {m[EVAL_LOSS]:.4f}"
            if spec.kind != "zero-shot":
                detail += f"  {m['train_time_s']:.1f} s  {m['tokens_per_s']:,.0f} tok/s"
        elif result.status == "diverged":
            detail = f"[red]diverged at step {result.diverged_step}[/]"
        elif result.status in ("paused", "pruned") and "rung_steps" in m:
            detail = (
                f"{result.status} at step {m['rung_steps']:.0f} "
                f"(rung eval loss {m['rung_eval_loss']:.4f})"
            )
        else:
            detail = f"[red]{result.status}: {escape(str(result.error))}[/]"
        self.console.print(
            f"[{number}/{self.n_todo}] {escape(_run_label(spec))} seed {spec.seed}: {detail}"
        )
        if self.progress is not None and self.overall is not None and result.status != "paused":
            self.progress.advance(self.overall)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _sigterm_as_interrupt():
    """Stop on SIGTERM (a scheduler or `kill`) as on Ctrl-C: the run in flight is marked."""

    def handler(signum, frame):
        raise StopRequested("SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set handlers (e.g. a test calling run_cli)
    return signal.signal(signal.SIGTERM, handler)


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The study file (the one argument without '=') and the key=value overrides."""
    study = None
    overrides = []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif study is None:
            study = a
        else:
            raise UserError(f"unexpected argument {a!r}: give one study file, then key=value")
    return study, overrides


def make_console() -> Console:
    """A console; when output is not a terminal (logs, tests), wide enough for the table."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    return console


def print_results(console: Console, store_dir: Path, study_id: str | None = None) -> None:
    with Store(store_dir, create=False, writer=False) as store:
        study = store.study(study_id)
        rows = run_end_rows(store, study["study_id"])
    console.print(render_table(rows, title=f"{escape(study['name'])} ({study['study_id']})"))
    console.print(table_caption(rows), style="dim")


@app.command()
def run(
    args: list[str] = typer.Argument(
        None, metavar="[STUDY] [KEY=VALUE]...", help="Study YAML (default: built-in) and overrides"
    ),
    out: Path | None = typer.Option(None, "--out", help="Output directory (holds loraplace.db)"),
    executor: str = typer.Option(
        "local", "--executor", help="Where runs execute: local (this process) or ray"
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto or HOST:PORT (default: start a local one)"
    ),
    cpus_per_run: float | None = typer.Option(
        None, "--cpus-per-run", help="Ray: CPUs per run (default: the study's threads, else 1)"
    ),
    gpus_per_run: float | None = typer.Option(
        None, "--gpus-per-run", help="Ray: GPUs per run (default: 1 when the cluster has GPUs)"
    ),
) -> int:
    """Run a placement study (resumable: finished runs are skipped)."""
    study_path, overrides = _split_args(list(args or []))
    if out is not None:
        overrides.append(f"out={out}")
    if executor not in ("local", "ray"):
        raise UserError(f"unknown executor {executor!r}: use --executor local or --executor ray")
    if executor == "local" and (address, cpus_per_run, gpus_per_run) != (None, None, None):
        raise UserError("--address, --cpus-per-run and --gpus-per-run need --executor ray")
    study = load_study(study_path, overrides)
    runner = None  # the driver's in-process default
    if executor == "ray":
        from loraplace.executors.ray_executor import RayExecutor

        runner = RayExecutor.for_study(study, address, cpus_per_run, gpus_per_run)
    console = make_console()
    t0 = time.perf_counter()
    previous = _sigterm_as_interrupt()
    try:
        outcome = run_study(study, executor=runner, display=RichDisplay(console))
    except StudyInterrupted as exc:
        console.print(f"{escape(str(exc))}; run the same command again to finish the study")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - t0
    print_results(console, study.out_dir, outcome.study_id)
    if study.analysis.margin:
        from loraplace.analysis import read_study_data
        from loraplace.analysis.fair import compare, seed_warning

        data = read_study_data(study.out_dir, outcome.study_id)
        for model in data.models():  # each model's seeds are judged on its own runs
            line = seed_warning(compare(data.for_model(model)))
            if line:
                lead = f"{model}: " if len(data.models()) > 1 else ""
                console.print(f"[yellow]warning[/]: {escape(lead + line)}")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.statuses.items()))
    console.print(
        f"ran {outcome.ran} of {outcome.total} runs in {wall:.1f} s ({counts}); "
        f"store: {escape(str(outcome.store_path))}"
    )
    return failed_exit(outcome.statuses, outcome.total, study.out_dir)


def failed_exit(statuses: dict[str, int], total: int, out_dir: Path) -> int:
    """Exit code 1 and one stderr line when runs of the study failed, else 0: a study
    whose runs failed is not a success (scripts and schedulers read the exit code)."""
    failed = statuses.get("failed", 0)
    if not failed:
        return 0
    print(
        f"error: {failed} of {total} runs failed: `loraplace status {shlex.quote(str(out_dir))}`"
        " lists each run's error; fix it and run the same command again (finished runs are "
        "kept)",
        file=sys.stderr,
    )
    return 1


def _stores_under(path: Path) -> list[Path]:
    if path.is_file() or (path / STORE_NAME).exists():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{STORE_NAME}")) if path.is_dir() else []
    if not found:
        raise UserError(
            f"no results store in {path}: give a study's output directory "
            "(run `loraplace run` first)"
        )
    return found


@app.command()
def status(
    directory: Path = typer.Argument(
        Path("runs"), metavar="[DIR]", help="Output directory, its .db, or a folder of them"
    ),
) -> int:
    """List the studies in a results store and the state of their runs."""
    console = make_console()
    for store_dir in _stores_under(directory):
        with Store(store_dir, create=False, writer=False) as store:
            for study in store.studies():
                sid = study["study_id"]
                counts = store.status_counts(sid)
                summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                console.print(
                    f"[bold]{escape(study['name'])}[/] ({sid}) in {escape(str(store.path))}: "
                    f"{summary}"
                )
                runs = store.runs(sid)
                metrics = store.metrics(r["run_id"] for r in runs)
                table = Table(show_edge=False, pad_edge=False)
                for col in ("run", "placement", "seed", "status", "eval loss", "note"):
                    table.add_column(
                        col, justify="right" if col in ("seed", "eval loss") else "left"
                    )
                for r in runs:
                    loss = metrics.get(r["run_id"], {}).get(EVAL_LOSS)
                    note = r["error"] or ""
                    if r["status"] == "diverged":
                        note = f"at step {r['diverged_step']}"
                    table.add_row(
                        r["run_id"],
                        escape(r["placement"]),
                        str(r["seed"]),
                        r["status"],
                        f"{loss:.4f}" if loss is not None else "—",
                        escape(note[:60]),
                    )
                console.print(table)
    return 0


def _run_label(spec: RunSpec) -> str:
    """The run's placement label, with its model and task in a study across them."""
    return "/".join(x for x in (spec.model_name, spec.task, spec.placement_name) if x)
