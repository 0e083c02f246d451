"""Grids: the settings a study sweeps per placement, and the label of each grid point.

Any of ``train.lr``, ``rank``, ``alpha``, ``use_dora``, ``use_rslora`` and
``init_lora_weights`` may be a list. A grid point is one value per axis; a study's runs
cross placements x grid points x seeds. The label of a run is its placement's name, then
``@`` and the values of the axes that vary (``seed-ffn@lr0.001,r8``), so labels stay
as they were for studies without a grid (and ``name@r8`` for a rank list).
"""

from __future__ import annotations

from itertools import product
from typing import Any

from loraplace.study.schema import Study

# Axis name -> how its value reads in a label.
_LABELS = {
    "lr": lambda v: f"lr{v:g}",
    "rank": lambda v: f"r{v}",
    "alpha": lambda v: f"a{v:g}",
    "use_dora": lambda v: "dora" if v else "lora",
    "use_rslora": lambda v: "rslora" if v else "lora-scale",
    "init_lora_weights": lambda v: f"init-{str(v).lower()}",
}
AXES = tuple(_LABELS)


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, list) else [v]


def grid_axes(study: Study) -> dict[str, list]:
    """Every axis with its values, in study order (a single value is a list of one)."""
    return {
        "lr": _as_list(study.train.lr),
        "rank": study.ranks,
        "alpha": _as_list(study.alpha),
        "use_dora": _as_list(study.use_dora),
        "use_rslora": _as_list(study.use_rslora),
        "init_lora_weights": _as_list(study.init_lora_weights),
    }


def varying_axes(study: Study) -> list[str]:
    """The axes with more than one value: what a grid point's label and setting name."""
    return [axis for axis, values in grid_axes(study).items() if len(values) > 1]


def grid_points(study: Study, *, own_rank: bool = False, own_alpha: bool = False) -> list[dict]:
    """One dict per grid point (axis -> value), the first axis varying slowest.

    own_rank / own_alpha: the placement sets its own, so that axis is not swept (None).
    """
    axes = grid_axes(study)
    if own_rank:
        axes["rank"] = [None]
    if own_alpha:
        axes["alpha"] = [None]
    return [dict(zip(axes, values, strict=True)) for values in product(*axes.values())]


def setting_of(point: dict, varying: list[str]) -> dict[str, Any]:
    """The grid point's values on the varying axes: what selection chooses between."""
    return {axis: point[axis] for axis in varying if point[axis] is not None}


def point_label(base: str, setting: dict[str, Any]) -> str:
    """``base@lr0.001,r8``: the placement's name and the setting; ``base`` with none."""
    if not setting:
        return base
    return base + "@" + ",".join(_LABELS[axis](v) for axis, v in setting.items())
