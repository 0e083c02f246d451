"""A JSON-able view of a layout for `loraplace inspect`: rows per (role, path) and a grid."""

from __future__ import annotations

import re

from loraplace.arch.layout import TOWERS, ArchInfo
from loraplace.arch.roles import ROLES


def _role_rows(arch: ArchInfo) -> list[dict]:
    rows: dict[tuple, list[int | None]] = {}
    for m in arch.modules:
        path = re.sub(r"^.*?\.\d+\.", "", m.name) if m.layer is not None else m.name
        key = (m.tower, m.role, path, m.in_features, m.out_features, m.experts, m.kind)
        rows.setdefault(key, []).append(m.layer)
    out = []
    for (tower, role, path, fin, fout, experts, kind), layers in rows.items():
        idx = sorted(x for x in layers if x is not None)
        out.append(
            {
                "tower": tower,
                "role": role,
                "path": path,
                "in_features": fin,
                "out_features": fout,
                "experts": experts,
                "kind": kind,
                "layers": _span(idx) if idx else "-",
                "n_modules": len(layers),
                "weight_params": experts * fin * fout,
                "lora_params_per_rank": experts * (fin + fout),
            }
        )
    out.sort(key=lambda x: (TOWERS.index(x["tower"]), ROLES.index(x["role"]), x["path"]))
    return out


def layout_summary(arch: ArchInfo) -> dict:
    """A JSON-able view for `loraplace inspect`: one row per (role, path), and a grid."""
    role_rows = _role_rows(arch)
    grid: dict[int, dict[str, str]] = {}
    for m in arch.modules:
        if m.layer is None or m.tower != "language":
            continue
        cell = f"{m.in_features} -> {m.out_features}"
        if m.experts > 1:
            cell = f"{m.experts} x {cell}"
        grid.setdefault(m.layer, {})
        prev = grid[m.layer].get(m.role)
        grid[m.layer][m.role] = f"{prev}; {cell}" if prev else cell
    order = [r for r in ROLES if any(x["role"] == r for x in role_rows)]
    in_grid = {r for cells in grid.values() for r in cells}
    return {
        "family": arch.family,
        "n_layers": arch.n_layers,
        "hidden_size": arch.hidden_size,
        "base_params": arch.base_params,
        "known": arch.known,
        "roles": role_rows,
        "role_order": [r for r in order if r in in_grid],
        "per_layer": {str(k): v for k, v in sorted(grid.items())},
        "layer_kinds": {str(k): v for k, v in arch.layer_kinds().items()},
        "modules": [
            {
                "name": m.name,
                "role": m.role,
                "layer": m.layer,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "kind": m.kind,
                "tower": m.tower,
                "experts": m.experts,
            }
            for m in arch.modules
        ],
    }


def _span(xs: list[int]) -> str:
    if xs == list(range(xs[0], xs[-1] + 1)):
        return f"{xs[0]}-{xs[-1]}" if len(xs) > 1 else str(xs[0])
    return ",".join(str(x) for x in xs)
