"""The Methods section's placements: each placement as resolved against the model (roles,
layers, ranks, parameter counts, shared module names), its table and its paragraph."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from loraplace.analysis import RunRecord, Summary
from loraplace.report import fmt
from loraplace.report import tables as tb
from loraplace.report.bib import Cite
from loraplace.report.escape import U
from loraplace.report.render import Para
from loraplace.report.reproducibility import distinct


def joined(values: Iterable[Any], show: Callable[[Any], str] = str) -> str:
    vs = distinct(values)
    return ", ".join(show(v) for v in vs) if vs else "not recorded"


def layer_ranges(layers: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0–2, 5'."""
    ls = sorted(set(layers))
    parts, start = [], None
    for i, v in enumerate(ls):
        start = v if start is None else start
        if i + 1 == len(ls) or ls[i + 1] != v + 1:
            parts.append(str(v) if start == v else f"{start}–{v}")
            start = None
    return ", ".join(parts)


@dataclass(frozen=True)
class PlacementMethod:
    """One placement as resolved: what it adapts and what it trains."""

    placement: str
    coverage: str  # "attn.qkv × layers 0–3; mlp.up × layers 0–3"
    modules: int
    ranks: str
    alphas: str
    shape_params: int  # r·(in + out) summed over the resolved modules (LoRA's A and B)
    measured_params: int | None  # trainable_params the run counted on the live model
    resolutions: list[str]  # "c_proj → attn.o (4), mlp.down (4)"


def resolutions(modules: list[dict[str, Any]]) -> list[str]:
    """Module names shared by several roles (GPT-2's c_proj), and what each resolved to."""
    by_suffix: dict[str, dict[str, int]] = {}
    for m in modules:
        suffix = str(m["name"]).rsplit(".", 1)[-1]
        roles = by_suffix.setdefault(suffix, {})
        roles[m["role"]] = roles.get(m["role"], 0) + 1
    return [
        f"{suffix} → " + ", ".join(f"{r} ({n})" for r, n in roles.items())
        for suffix, roles in by_suffix.items()
        if len(roles) > 1
    ]


def placement_method(name: str, run: RunRecord) -> PlacementMethod:
    mods = run.modules
    by_role: dict[str, list[int]] = {}
    for m in mods:
        by_role.setdefault(m["role"], []).append(int(m["layer"]))
    by_layers: dict[str, list[str]] = {}  # roles on the same layers share one entry
    for r, ls in by_role.items():
        by_layers.setdefault(layer_ranges(ls), []).append(r)
    coverage = "; ".join(f"{'+'.join(rs)} × layers {ls}" for ls, rs in by_layers.items())
    measured = run.metric("trainable_params")
    return PlacementMethod(
        placement=name,
        coverage=coverage or ("every weight" if run.kind == "full" else "none"),
        modules=len(mods),
        ranks=joined((m["rank"] for m in mods), lambda v: f"{v:g}"),
        alphas=joined((m["alpha"] for m in mods), lambda v: f"{v:g}"),
        shape_params=sum(
            int(m["rank"]) * (int(m["in_features"]) + int(m["out_features"])) for m in mods
        ),
        measured_params=int(measured) if measured is not None else None,
        resolutions=resolutions(mods),
    )


def placement_methods(s: Summary) -> list[PlacementMethod]:
    return [placement_method(p.placement, p.runs[0]) for p in s.placements if p.runs]


def placements_table(pms: list[PlacementMethod]) -> tb.Table:
    cols = ["Placement", "Roles × layers", "Modules", "Rank", "Alpha"]
    cols += ["r·(in+out)", "Trainable params (run)", "Name resolution"]
    rows, raw = [], []
    for p in pms:
        rows.append(
            [
                U(p.placement),
                p.coverage,
                str(p.modules),
                p.ranks,
                p.alphas,
                fmt.count(p.shape_params),
                tb.DASH if p.measured_params is None else fmt.count(p.measured_params),
                U("; ".join(p.resolutions)) if p.resolutions else tb.DASH,
            ]
        )
        raw.append(
            {
                "placement": p.placement,
                "coverage": p.coverage,
                "modules": p.modules,
                "ranks": p.ranks,
                "alphas": p.alphas,
                "shape_params": p.shape_params,
                "trainable_params": p.measured_params,
                "resolutions": "; ".join(p.resolutions),
            }
        )
    return tb.Table(
        "methods_placements",
        "Placements as resolved against the model",
        cols,
        rows,
        raw,
        notes=[
            [
                "r·(in+out) counts LoRA's A (r × in) and B (out × r) matrices from the "
                "resolved module shapes; the run column is what training counted as "
                "trainable on the live model."
            ]
        ],
        align="llrrrrrl",
    )


def placement_para(pms: list[PlacementMethod], runs: list[RunRecord]) -> Para:
    rslora = any(r.spec.get("use_rslora") for r in runs)
    parts: list[str] = [
        "Adapters are LoRA ",
        Cite("hu2022lora"),
        " modules injected with PEFT ",
        Cite("mangrulkar2022peft"),
        " into exactly the modules listed for each placement below: every pattern was "
        "resolved once against the model into explicit module names, which training, "
        "parameter accounting and export all read. The update is scaled by ",
    ]
    parts += (
        ["alpha/sqrt(r) (rank-stabilised LoRA ", Cite("kalajdzievski2023rslora"), ")."]
        if rslora
        else ["alpha/r."]
    )
    amb = [p for p in pms if p.resolutions]
    if amb:
        parts.append(
            f" {len(amb)} placement(s) name modules that several roles share; the table "
            "shows what each name resolved to, so a placement named after attention that "
            "also adapts an MLP projection is visible here."
        )
    return Para(parts)
