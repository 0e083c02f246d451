"""The Predictors section: `loraplace validate`'s table, when its validation.json lies
beside the store (the report reads the file as written; it never runs a predictor).

Per (model, task) cell and predictor: the cost as a fraction of the cell's training, the
top-1 against the measured best, Kendall's tau, and the regret with its 95 % interval
over seeds; then the cheapest predictor within seed noise on at least 3 of 4 cells, and
per cell the pick ``recommend`` follows against the best preset (paired over seeds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.render import Bullets, Document, Heading, Para
from loraplace.report.tables import DASH, Table

FILE = "validation.json"  # what `loraplace validate` writes beside the store
WITHIN = 0.75  # the summary's share of cells (3 of 4), as validate's own


def read_validation(store_path: Path, study: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the validation document beside the store, None) when it is this study's; else
    (None, why it is not used) when a file is there; (None, None) when none is."""
    path = Path(store_path).parent / FILE
    if not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"{path} is not a validation file: run `loraplace validate` again"
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list) or not doc["cells"]:
        return None, f"{path} holds no validation cells: run `loraplace validate` again"
    if doc.get("study") != study:
        return None, (
            f"{path} validates study {doc.get('study')!r}, not {study!r}: run `loraplace "
            "validate` on this study to add its Predictors section"
        )
    return doc, None


def _regret(c: dict[str, Any]) -> str:
    ci = f" ± {c['regret_ci']:.4f}" if c.get("regret_ci") is not None else ""
    return f"{c['regret']:.4f}{ci}"


def predictor_table(doc: dict[str, Any]) -> Table:
    cols = [
        "Predictor",
        "Model",
        "Task",
        "Metric",
        "Cost (s)",
        "Cost fraction",
        "Top-1",
        "Measured best",
        "Kendall τ",
        "Regret ± 95 % CI",
        "Seeds",
    ]
    rows, raw = [], []
    for c in doc["cells"]:
        frac = c.get("cost_fraction")
        rows.append(
            [
                U(c["predictor"]),
                U(c["model"]),
                U(c["task"]),
                U(c["metric"]),
                f"{c['seconds']:.1f}",
                f"{frac:.3f}" if frac is not None else DASH,
                U(c["top1"]),
                U(c["best"]),
                fmt.stat(c.get("tau")),
                _regret(c),
                str(c.get("regret_seeds", DASH)),
            ]
        )
        raw.append({k: v for k, v in c.items() if k not in ("order", "vs_preset")})
    return Table(
        "predictors",
        "Predictors against the measured ranking, per model and task",
        cols,
        rows,
        raw,
        align="llll" + "r" * 2 + "ll" + "r" * 3,
    )


def summary_parts(doc: dict[str, Any]) -> list:
    """The cheapest predictor within seed noise on at least 3 of 4 cells, or none."""
    by: dict[str, list[dict[str, Any]]] = {}
    for c in doc["cells"]:
        by.setdefault(c["predictor"], []).append(c)
    n = len({(c["model"], c["task"]) for c in doc["cells"]})
    need = max(1, math.ceil(WITHIN * n))
    within = {p: sum(bool(c.get("within_noise")) for c in cs) for p, cs in by.items()}
    counts = ", ".join(f"{p} {within[p]}/{len(by[p])}" for p in by)
    ok = [p for p in by if within[p] >= need]
    if not ok:
        return [
            f"No predictor's regret is within seed noise (its 95 % interval reaching 0) on "
            f"at least {need} of the {n} cells (cells within noise: ",
            U(counts),
            ").",
        ]

    def cost(p: str) -> tuple:
        fracs = [c["cost_fraction"] for c in by[p] if c.get("cost_fraction") is not None]
        return (sum(fracs) / len(fracs) if fracs else math.inf, p)

    best = min(ok, key=cost)
    return [
        "The cheapest predictor (by mean cost fraction) whose regret is within seed noise "
        f"on at least {need} of the {n} cells is ",
        U(best),
        f", at {cost(best)[0]:.3f} of the study's training on average (cells within noise: ",
        U(counts),
        ").",
    ]


def preset_items(doc: dict[str, Any]) -> list[list]:
    """Per cell: the pick of the predictor recommend follows against the best preset."""
    items = []
    for r in doc.get("recommend") or []:
        head: list = [U(f"{r['model']}, {r['task']}"), ": recommend follows ", U(r["predictor"])]
        head += [" and picks ", U(r["chosen"])]
        if r.get("best_preset") is None:
            items.append([*head, "; no preset was measured."])
            continue
        ci = f" ± {r['ci']:.4f}" if r.get("ci") is not None else ""
        items.append(
            [
                *head,
                "; the best preset is ",
                U(r["best_preset"]),
                f": {r['lost']:.4f}{ci} ",
                U(r["metric"]),
                f" lost over {r['seeds']} seeds (one-sided, pick worse: paired t p = "
                f"{fmt.pvalue(r.get('p_t'))}, Wilcoxon p = {fmt.pvalue(r.get('p_wilcoxon'))}).",
            ]
        )
    return items


def add_predictors_section(doc: Document, table: Callable, store_path: Path, study: str) -> None:
    vdoc, why = read_validation(store_path, study)
    if vdoc is None:
        if why is not None:
            doc.add(Heading(2, ["Predictors"]))
            doc.add(Para([U(why)], "warning"))
        return
    doc.add(Heading(2, ["Predictors"]))
    doc.add(
        Para(
            [
                "Cheap predictors of the best placement, each checked against what this study "
                "measured on every model and task (",
                U(FILE),
                " beside the store, from `loraplace validate`). Cost is the predictor's wall "
                "time over the cell's training time; regret is the metric lost by following "
                "its first placement instead of the measured best, paired over seeds. A "
                "study's first halving rung serves as its short runs, and its smallest model's "
                "measured ranking as the proxy for the larger ones.",
            ]
        )
    )
    doc.add(table(predictor_table(vdoc)))
    doc.add(Para(summary_parts(vdoc)))
    items = preset_items(vdoc)
    if items:
        doc.add(
            Para(
                [
                    "Against the best preset, per cell (the predictor is chosen on the same "
                    "cell, so this is an in-sample check):"
                ]
            )
        )
        doc.add(Bullets(items))
