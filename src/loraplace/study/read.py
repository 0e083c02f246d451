"""Reading a study: the YAML file, ``key=value`` overrides, validation into a Study, and
the one-line error a user sees when something is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loraplace.budget.generated import AllocateEntry, parse_generated
from loraplace.defaults import default_study_config
from loraplace.errors import UserError, closest
from loraplace.study.bounds import check_bounds, check_select
from loraplace.study.grid import grid_axes
from loraplace.study.schema import Study


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-3`` -> (["train", "lr"], 0.001); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override {text!r} is not key=value (e.g. train.lr=1e-3 seeds=[0,1])")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a copy of the raw config (validation comes after)."""
    out = json.loads(json.dumps(config))  # deep copy of plain YAML data
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if part == "model" and node is out and isinstance(child, str):
                child = node[part] = {"name": child}  # model.quantize=4bit keeps the name
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not a shadow."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_study_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"study file {p} is a directory: give a .yaml study (see examples/)")
    if not p.is_file():
        raise UserError(f"study file {p} does not exist: give a .yaml study (see examples/)")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise UserError(f"study file {p} is not valid YAML: {first}") from None
    except OSError as exc:
        raise UserError(f"study file {p} cannot be read: {exc.strerror}") from None
    if data is None:
        raise UserError(
            f"study file {p} is empty: give at least model:, dataset: and placements: "
            "(see examples/), or run `loraplace run` with no file for the default study"
        )
    if not isinstance(data, dict):
        raise UserError(f"study file {p} must be a mapping of keys (name:, model:, ...)")
    return data


def validate_study(config: dict[str, Any], source: str = "study") -> Study:
    """Validate a raw config into a Study; the first problem becomes one clear line."""
    if isinstance(config.get("placements"), dict):  # {label: spec} is accepted too
        config = dict(config)
        config["placements"] = [
            {"name": k, **v} if isinstance(v, dict) else {"name": k, "preset": v}
            for k, v in config["placements"].items()
        ]
    try:
        study = Study.model_validate(config)
    except ValidationError as exc:
        raise UserError(f"{source}: {_explain(exc)}") from None
    check_bounds(study, source)
    if not study.placements and not study.zero_shot and not study.full_finetune:
        raise UserError(f"{source}: the study has no placements and no baselines: add placements")
    if not study.seeds:
        raise UserError(f"{source}: seeds is empty: give at least one, e.g. seeds: [0]")
    _check_grid(study, source)
    _check_tasks(study, source)
    _check_models(study, source)
    check_select(study, source)

    for entry in study.placements:
        gen = parse_generated(entry)  # a malformed allocate/random entry fails here
        if gen is not None and study.budget is None:
            raise UserError(
                f"{source}: placement {entry!r} is generated at the study's budget, but the "
                "study has none: add budget: (a count, '0.55%' or 'seed-ffn@r8')"
            )
    return study


def _check_grid(study: Study, source: str) -> None:
    """An empty axis list expands the grid to no runs: refused like ``seeds: []``."""
    for axis, values in grid_axes(study).items():
        if not values:
            key = "train.lr" if axis == "lr" else axis
            raise UserError(
                f"{source}: {key} is an empty list, a grid of no runs: give at least one "
                f"value, or leave {key} out for its default"
            )


def _check_replaces(study: Study, source: str, one: str, what: str) -> None:
    """A list key (``datasets``, ``models``) replaces its single key and lists something."""
    many = one + "s"
    if one in study.model_fields_set:
        raise UserError(
            f"{source}: the study has both {one} and {many}: keep {many} (a list of "
            f"{what}) and remove {one}"
        )
    if not getattr(study, many):
        raise UserError(f"{source}: {many} is empty: give at least one {one}")


def _check_tasks(study: Study, source: str) -> None:
    """``datasets`` replaces ``dataset``; its task names label tables, so each is unique."""
    if study.datasets is None:
        return
    _check_replaces(study, source, "dataset", "tasks")
    names = [t.name for t in study.tasks if t.name is not None]  # with datasets, all are named
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(
            f"{source}: task {twice[0]!r} appears twice in datasets: give each entry its "
            "own name ({name: ..., dataset: ...})"
        )
    # The task name is no part of a run's identity (what is trained is): two tasks on the
    # same data would be one set of runs, and one task would vanish from every table.
    first: dict[tuple[str, str], str | None] = {}
    for t in study.tasks:
        other = first.setdefault((t.dataset, t.text_field), t.name)
        if other != t.name:
            raise UserError(
                f"{source}: tasks {other!r} and {t.name!r} both read {t.dataset}: their runs "
                "would be the same runs and one task would be dropped: keep one entry"
            )


def _check_models(study: Study, source: str) -> None:
    """``models`` replaces ``model``; each model once, and one probe cannot serve several."""
    if study.models is None:
        return
    _check_replaces(study, source, "model", "models")
    for what, values in (
        ("model", [m.name or m.ref for m in study.model_list]),
        ("model reference", [m.ref for m in study.model_list]),
    ):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise UserError(
                f"{source}: {what} {twice[0]!r} appears twice in models: list each model once"
            )
    if study.probe is not None or any(
        isinstance(parse_generated(e), AllocateEntry) for e in study.placements
    ):
        raise UserError(
            f"{source}: probe and allocate placements score one model, but the study lists "
            "several models: run them as one study per model, or drop probe/allocate"
        )


def load_study(path: str | Path | None, overrides: list[str] | None = None) -> Study:
    """Read a study file (or the built-in default when path is None) and apply overrides."""

    if path is None:
        config, source = default_study_config(), "default study"
    else:
        config, source = read_study_file(path), str(path)
    config = apply_overrides(config, overrides or [])
    return validate_study(config, source)


def _explain(exc: ValidationError) -> str:
    errors = exc.errors()
    # A union reports one error per branch: the deepest one says most (rank.1, not rank).
    first = errors[0]["loc"][:1]
    err = max((e for e in errors if e["loc"][:1] == first), key=lambda e: len(e["loc"]))
    loc = [str(x) for x in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        hint = closest(loc[-1], valid)
        return f"unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"missing key {key!r}"
    # Union types report one error per branch; the last element of loc may be the branch.
    loc = [p for p in loc if not any(c in p for c in "[]") and p not in ("int", "str", "float")]
    key = ".".join(loc)
    got = err.get("input")
    got_s = json.dumps(got, default=str)
    if len(got_s) > 40:
        got_s = got_s[:37] + "..."
    return f"key {key!r}: {err['msg'].rstrip('.')} (got {got_s})"


def _valid_keys(loc: list[str]) -> list[str]:
    model: Any = Study
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))
