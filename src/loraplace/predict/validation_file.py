"""The validation's files: validation.md (the table, the summary line and the paired
tests), validation.json (what ``recommend`` and the report read) and validation.csv;
and the choice of the best-validated predictor for a model and data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from loraplace.errors import UserError

FILE = "validation.json"
WITHIN = 0.75  # the summary asks for regret within noise on at least 3 of 4 cells

COLUMNS = (
    "predictor",
    "model",
    "task",
    "cost (s)",
    "cost fraction",
    "top-1",
    "measured best",
    "top-1 agrees",
    "Kendall tau",
    "regret ± 95 % CI (seeds)",
)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def regret_text(c: dict[str, Any]) -> str:
    ci = f" ± {c['regret_ci']:.4f}" if c["regret_ci"] is not None else ""
    return f"{c['regret']:.4f}{ci} ({c['regret_seeds']})"


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in doc["cells"]:
        rows.append(
            [
                c["predictor"],
                c["model"],
                c["task"],
                f"{c['seconds']:.1f}",
                _fmt(c["cost_fraction"], ".3f"),
                c["top1"],
                c["best"],
                "yes" if c["top1_agrees"] else "no",
                _fmt(c["tau"], ".3f"),
                regret_text(c),
            ]
        )
    return rows


def metrics_line(doc: dict[str, Any]) -> str:
    """Which metric each cell's regret is in (test accuracy, accuracy or loss)."""
    by: dict[str, list[str]] = {}
    for c in doc["cells"]:
        cell = f"{c['model']}/{c['task']}"
        if cell not in by.setdefault(c["metric"], []):
            by[c["metric"]].append(cell)
    parts = []
    for metric, cells in by.items():
        way = "lower" if "loss" in metric else "higher"
        parts.append(f"{metric} ({way} is better) on {', '.join(cells)}")
    return (
        "Regret in " + "; ".join(parts) + " (positive = lost by following the predictor), "
        "paired over seeds."
    )


def preset_lines(doc: dict[str, Any]) -> list[str]:
    """Per cell: recommend's pick against the best preset, with its paired tests."""
    lines = []
    for r in doc.get("recommend") or []:
        where = f"{r['model']}, {r['task']}"
        if r.get("best_preset") is None:
            lines.append(f"- {where}: {r['predictor']} picks {r['chosen']}; no preset measured.")
            continue
        ci = f" ± {r['ci']:.4f}" if r.get("ci") is not None else ""
        lines.append(
            f"- {where}: recommend follows {r['predictor']} and picks {r['chosen']}; best "
            f"preset {r['best_preset']}; {r['metric']} lost {r['lost']:.4f}{ci} over "
            f"{r['seeds']} seeds, paired t p = {_fmt(r.get('p_t'), '.3g')}, Wilcoxon p = "
            f"{_fmt(r.get('p_wilcoxon'), '.3g')} (one-sided: pick worse)."
        )
    return lines


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Predictor validation: study {doc['study']}",
        "",
        metrics_line(doc) if doc["cells"] else "No cell was scored.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(doc)]
    lines += ["", summary(doc)]
    skipped = doc.get("skipped") or []
    if skipped:
        lines += [
            "",
            "Not scored (nothing to predict from): "
            + ", ".join(f"{s['predictor']} on {s['model']}/{s['task']}" for s in skipped)
            + " (the proxy is the smallest model's measured ranking, for the larger ones).",
        ]
    presets = preset_lines(doc)
    if presets:
        lines += [
            "",
            "Recommend's pick against the best preset (chosen by the validation of the same "
            "cell: in-sample):",
            *presets,
        ]
    return "\n".join(lines) + "\n"


def summary(doc: dict[str, Any]) -> str:
    """One line: the cheapest predictor whose regret is within seed noise on at least
    three quarters of the cells (3 of 4), or that none is."""
    by: dict[str, list[dict[str, Any]]] = {}
    for c in doc["cells"]:
        by.setdefault(c["predictor"], []).append(c)
    n = len({(c["model"], c["task"]) for c in doc["cells"]})
    need = max(1, math.ceil(WITHIN * n))
    ok = [p for p, cs in by.items() if sum(c["within_noise"] for c in cs) >= need]
    counts = ", ".join(
        f"{p} {sum(c['within_noise'] for c in cs)}/{len(cs)}" for p, cs in by.items()
    )
    if not ok:
        return (
            f"No predictor's regret is within seed noise on at least {need} of {n} cell(s) "
            f"({counts})."
        )

    def cost(p: str) -> tuple:
        fracs = [c["cost_fraction"] for c in by[p] if c["cost_fraction"] is not None]
        mean = sum(fracs) / len(fracs) if fracs else math.inf
        return (mean, sum(c["seconds"] for c in by[p]), p)

    cheapest = min(ok, key=cost)
    return (
        f"Cheapest predictor (mean cost fraction) with regret within seed noise (95 % CI "
        f"reaching 0) on at least {need} of {n} cell(s): **{cheapest}** (cells within "
        f"noise: {counts})."
    )


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    """validation.md, .json and .csv under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, cs = out / "validation.md", out / FILE, out / "validation.csv"
    md.write_text(markdown(doc), encoding="utf-8")
    js.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    keys = list(doc["cells"][0]) if doc["cells"] else []
    flat = [k for k in keys if k not in ("order", "vs_preset")]
    with cs.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=flat, extrasaction="ignore")
        w.writeheader()
        w.writerows(doc["cells"])
    return [md, js, cs]


def best_validated(doc: dict[str, Any], model: str, dataset: str) -> dict[str, Any] | None:
    """The predictor that validated best for (model, dataset), with its scores and the
    run settings of its first cell (``template``); or None.

    Best = lowest mean regret over the matching cells, then highest mean tau, then
    cheapest. ``model`` matches a cell's model label or reference, ``dataset`` its task
    or the dataset that task names.
    """
    datasets = doc.get("datasets", {})
    cells = [
        c
        for c in doc.get("cells", [])
        if model in (c["model"], c.get("model_ref"))
        and dataset in (c["task"], datasets.get(c["task"]))
    ]
    if not cells:
        return None
    by: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by.setdefault(c["predictor"], []).append(c)

    def key(name: str):
        cs = by[name]
        taus = [c["tau"] for c in cs if c["tau"] is not None]
        return (
            sum(c["regret"] for c in cs) / len(cs),
            -(sum(taus) / len(taus)) if taus else math.inf,
            sum(c["seconds"] for c in cs),
            name,
        )

    name = min(by, key=key)
    first = by[name][0]
    template = next(
        (
            x.get("template")
            for x in doc.get("contexts") or []
            if (x.get("model"), x.get("task")) == (first["model"], first["task"])
        ),
        doc.get("template"),
    )
    return {"predictor": name, "cells": by[name], "study": doc.get("study"), "template": template}


def read(path: str | Path) -> dict[str, Any]:
    """A validation file (or the directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no validation file at {p}: run `loraplace validate` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{p} is not a validation file ({why}): run validate again") from None
    problem = _shape_problem(doc)
    if problem:
        raise UserError(f"{p} is not a validation file ({problem}): run validate again")
    return doc


_NUMBER = (int, float)
_CELL_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "task": str,
    "predictor": str,
    "regret": _NUMBER,
    "seconds": _NUMBER,
}


def _shape_problem(doc: Any) -> str | None:
    """What keeps ``doc`` from being read as a validation document, if anything."""
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        return "no list of cells"
    if not isinstance(doc.get("datasets", {}), dict):
        return "datasets is not a mapping"
    for i, cell in enumerate(doc["cells"]):
        if not isinstance(cell, dict):
            return f"cell {i} is not a mapping"
        for key, kind in _CELL_KEYS.items():
            if not isinstance(cell.get(key), kind):
                return f"cell {i} has no valid {key}"
        if cell.get("tau") is not None and not isinstance(cell["tau"], _NUMBER):
            return f"cell {i} has no valid tau"
    return None
