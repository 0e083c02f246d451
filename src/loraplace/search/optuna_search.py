"""Multi-objective search over placements with Optuna: eval loss against trainable params.

Each trial proposes roles x a layer range x a rank, which re-enters as an ordinary
one-placement study: its runs go to the same results store as every other run (so the
report, `status` and `recommend` see them), and the executor is the study's own
(in-process or Ray). Optuna keeps only the search state: SQLite next to the store by
default, or any database URL (PostgreSQL when trials run on several machines). The
sampler is seeded and the study is loaded if it exists, so a search resumes where it
stopped and never repeats a finished trial.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraplace.arch import describe
from loraplace.budget import parse_budget
from loraplace.driver import run_study
from loraplace.errors import UserError
from loraplace.metrics import EVAL_LOSS
from loraplace.outdir import check_writable
from loraplace.placement import resolve
from loraplace.study import Study

DEFAULT_RANKS = (2, 4, 8, 16)


@dataclass
class SearchSpace:
    """What a trial may choose."""

    roles: list[str]  # candidate roles (their non-empty subsets are searched)
    n_layers: int
    ranks: tuple[int, ...] = DEFAULT_RANKS
    max_roles: int = 3  # largest role subset tried

    def role_sets(self) -> list[str]:
        sets = []
        for k in range(1, min(self.max_roles, len(self.roles)) + 1):
            sets += ["+".join(c) for c in itertools.combinations(self.roles, k)]
        return sets


@dataclass
class SearchOutcome:
    """What a search call did."""

    study_name: str
    storage: str
    trials_done: int  # complete trials in the Optuna study after this call
    trials_run: int  # trials this call ran
    pareto: list[dict[str, Any]] = field(default_factory=list)


def space_for(model, ranks=DEFAULT_RANKS, max_roles: int = 3) -> SearchSpace:
    """The search space of a model: its readable roles (no lm_head), all layers."""

    arch = describe(model)
    if not arch.known:
        raise UserError(
            f"search needs module roles, and those of {arch.family!r} cannot be read: "
            "compare target_modules placements in a study instead"
        )
    roles = [r for r in arch.roles() if r not in ("lm_head", "other")]
    return SearchSpace(roles=roles, n_layers=arch.n_layers, ranks=tuple(ranks), max_roles=max_roles)


def propose(trial, space: SearchSpace) -> dict[str, Any]:
    """A placement spec (dict) from one Optuna trial."""
    roles = trial.suggest_categorical("roles", space.role_sets())
    a = trial.suggest_int("first_layer", 0, space.n_layers - 1)
    b = trial.suggest_int("last_layer", 0, space.n_layers - 1)
    lo, hi = min(a, b), max(a, b)
    rank = trial.suggest_categorical("rank", list(space.ranks))
    layers = f"{lo}-{hi}" if hi > lo else str(lo)
    name = f"t{trial.number}:{roles}@{layers}/r{rank}"
    return {"name": name, "roles": roles.split("+"), "layers": layers, "rank": rank}


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'optuna.db').resolve()}"


def _check_args(study, trials: int) -> None:
    if trials < 1:
        raise UserError(f"--trials {trials}: a search needs at least 1 trial; give --trials N")
    if study.models is not None:
        raise UserError(
            "search tunes placements on one model, but the study lists models: search "
            "each with model: NAME instead of models:"
        )


def run_search(
    study,
    *,
    trials: int,
    seed: int = 0,
    storage: str | None = None,
    budget: int | str | None = None,
    ranks=DEFAULT_RANKS,
    max_roles: int = 3,
    executor=None,
    display=None,
    assets=None,
) -> SearchOutcome:
    """Run the search until the Optuna study holds ``trials`` complete trials.

    Args:
        study: a validated Study; its model, data, training settings and seeds are used
            for every trial; its own placements are ignored.
        budget: trainable-parameter cap; trials above it are pruned before training.
    """
    _check_args(study, trials)  # before the storage or the output directory is made
    try:
        import optuna
    except ImportError:
        raise UserError("search needs Optuna: pip install 'loraplace[search]'") from None
    from loraplace.assets import Assets

    optuna.logging.set_verbosity(logging.WARNING)
    assets = assets or Assets()
    out_dir = study.out_dir
    check_writable(out_dir, "output directory", "out=DIR")
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    t = study.train_settings()
    # the base the runs train on (quantized or not), loaded once for the search and its runs
    model, _ = assets.model(study.model, t.device, study.quantize, t.precision)
    space = space_for(model, ranks=ranks, max_roles=max_roles)
    cap = _cap(budget, model)
    name = f"{study.name}-search"
    ostudy = _open_study(optuna, name, storage, seed)
    base = study.model_dump(mode="json")
    base.update(zero_shot=False, full_finetune=False)

    def objective(trial) -> tuple[float, float]:
        spec = propose(trial, space)
        # + DoRA's magnitudes when any grid point uses DoRA: the cap holds for every run
        rp = resolve(spec, model, use_dora=_any_dora(study.use_dora))
        trial.set_user_attr("placement", spec)
        trial.set_user_attr("trainable_params", rp.trainable_params)
        if cap is not None and rp.trainable_params > cap:
            raise optuna.TrialPruned(f"{rp.trainable_params} params > budget {cap}")
        one = Study(**{**base, "name": name, "placements": [spec]})
        outcome = run_study(one, executor=executor, assets=assets, display=display)
        loss, run_ids = _seed_mean_loss(outcome.store_path, outcome.study_id)
        if loss is None:
            raise optuna.TrialPruned("no run of this placement finished (diverged or failed)")
        trial.set_user_attr("run_ids", run_ids)
        return loss, float(rp.trainable_params)

    done = _complete(ostudy)
    todo = max(0, trials - done)
    if todo:
        ostudy.optimize(objective, n_trials=todo, catch=())
    # One study row that links every trial's runs: `loraplace report` on the store then
    # shows the whole search, with its Pareto front.
    placements = [
        t.user_attrs["placement"]
        for t in ostudy.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "placement" in t.user_attrs
    ]
    if placements:
        zero = study.zero_shot
        combined = Study(**{**base, "name": name, "placements": placements, "zero_shot": zero})
        run_study(combined, executor=executor, assets=assets, display=display)
    return SearchOutcome(name, storage, _complete(ostudy), todo, _pareto(ostudy))


def _open_study(optuna, name: str, storage: str, seed: int):
    """The Optuna study of this search (resumed when the storage holds it)."""
    try:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            directions=["minimize", "minimize"],  # eval loss, trainable params
            sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=8),
            load_if_exists=True,
        )
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise UserError(f"cannot open Optuna storage {storage!r}: {exc}") from None


def _seed_mean_loss(store_path, study_id: str) -> tuple[float | None, list[str]]:
    """A trial's objective: its placement's seed-mean eval loss as the report computes it
    (None when no run finished), and the ids of the trial's runs."""
    from loraplace.analysis.aggregate import summarize
    from loraplace.analysis.read import read_study_data

    data = read_study_data(store_path, study_id)
    trained = [p for p in summarize(data).placements if p.kind == "lora"]
    return (trained[0].loss.mean if trained else None), [r.run_id for r in data.runs]


def _pareto(ostudy) -> list[dict]:
    """The Pareto-optimal trials, cheapest first."""
    pareto = [
        {
            "trial": t.number,
            "placement": t.user_attrs.get("placement"),
            EVAL_LOSS: t.values[0],
            "trainable_params": int(t.values[1]),
        }
        for t in ostudy.best_trials
    ]
    return sorted(pareto, key=lambda p: p["trainable_params"])


def _complete(ostudy) -> int:
    import optuna

    return sum(1 for t in ostudy.trials if t.state == optuna.trial.TrialState.COMPLETE)


def _any_dora(use_dora: bool | list[bool]) -> bool:
    return use_dora is True or (isinstance(use_dora, list) and True in use_dora)


def _cap(budget: int | str | None, model) -> int | None:
    """The trainable-parameter cap of the trials, from the --budget option."""
    if budget is None:
        return None

    return parse_budget(budget, model)
