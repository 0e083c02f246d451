"""`loraplace search`: multi-objective search whose trials are ordinary runs in the store."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from loraplace.cli.app import app
from loraplace.errors import UserError
from loraplace.metrics import EVAL_LOSS


@app.command()
def search(
    args: list[str] = typer.Argument(
        None, metavar="[STUDY] [KEY=VALUE]...", help="Study YAML (model, data, training)"
    ),
    trials: int = typer.Option(12, "--trials", "-n", help="complete trials to reach"),
    seed: int = typer.Option(0, "--seed", help="seed of the Optuna sampler"),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: sqlite next to the store)"
    ),
    budget: str | None = typer.Option(None, "--budget", help="trainable-param cap: 2M, 0.5%"),
    ranks: str = typer.Option("2,4,8,16", "--ranks", help="ranks a trial may choose"),
    executor: str = typer.Option("local", "--executor", help="local or ray"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address"),
) -> int:
    """Multi-objective search (eval loss vs trainable params) over roles, layers, ranks."""
    from collections import Counter

    from loraplace.cli.run import RichDisplay, _split_args, failed_exit, make_console
    from loraplace.search import run_search
    from loraplace.store import Store
    from loraplace.study import load_study

    study_path, overrides = _split_args(list(args or []))
    study = load_study(study_path, overrides)
    try:
        rank_list = tuple(int(r) for r in ranks.split(","))
    except ValueError:
        raise UserError(f"bad --ranks {ranks!r}: give integers separated by commas") from None
    runner = None
    if executor == "ray":
        from loraplace.executors.ray_executor import RayExecutor

        runner = RayExecutor.for_study(study, address)
    elif executor != "local":
        raise UserError(f"unknown executor {executor!r}: use --executor local or --executor ray")
    console = make_console()
    res = run_search(
        study,
        trials=trials,
        seed=seed,
        storage=storage,
        budget=budget,
        ranks=rank_list,
        executor=runner,
        display=RichDisplay(console),
    )
    t = Table(title=f"Pareto front of {escape(res.study_name)} ({res.trials_done} trials)")
    for col in ("trial", "placement", "eval loss", "trainable params"):
        t.add_column(col, justify="left" if col == "placement" else "right")
    for p in res.pareto:
        t.add_row(
            str(p["trial"]),
            escape(p["placement"]["name"]),
            f"{p[EVAL_LOSS]:.4f}",
            f"{p['trainable_params']:,}",
        )
    console.print(t)
    console.print(
        f"ran {res.trials_run} trial(s); Optuna storage {escape(str(res.storage))}; "
        f"report: loraplace report {escape(str(study.out_dir))}"
    )
    with Store(study.out_dir, create=False, writer=False) as store:
        statuses = Counter(r["status"] for r in store.runs())
    return failed_exit(dict(statuses), sum(statuses.values()), study.out_dir)
