"""The one layer x role heatmap, drawn for the report's importance figure and the probe's
panels (a module of its own, so that probe and report need not import each other)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def draw_heatmap(
    ax: Any,
    values: Any,
    layers: Sequence[Any],
    roles: Sequence[str],
    *,
    reverse: bool = False,
    fmt: str = ".3f",
    fontsize: float = 6,
    tick_fontsize: float | None = None,
    cell_labels: bool = True,
) -> Any:
    """Draw ``values`` [layer, role] on ``ax`` and return the image (for a colour bar).

    reverse: low values are the bright end (scores where low means 'adapt here').
    Cells without a value (NaN) are grey; ``cell_labels`` prints each value in its cell.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    cmap = plt.get_cmap("viridis_r" if reverse else "viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap)
    ticks = {} if tick_fontsize is None else {"fontsize": tick_fontsize}
    ax.set_xticks(range(len(roles)), list(roles), rotation=30, ha="right", **ticks)
    ax.set_yticks(range(len(layers)), [str(x) for x in layers], **ticks)
    ax.set_ylabel("layer")
    if not cell_labels:
        return im
    for i in range(len(layers)):
        for j in range(len(roles)):
            v = float(values[i, j])
            if math.isnan(v):
                continue
            # dark text on the bright end of viridis, light text on the dark end
            level = float(im.norm(v))
            bright = (1.0 - level if reverse else level) > 0.6
            ax.text(
                j,
                i,
                format(v, fmt),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="black" if bright else "white",
            )
    return im
