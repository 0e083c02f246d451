"""The layer x role heatmap of a probe: one panel per score, written as a PNG."""

from __future__ import annotations

from pathlib import Path

from loraplace.heatmap import draw_heatmap
from loraplace.probe.result import SCORES, ProbeResult


def heatmap(result: ProbeResult, path: Path, *, scores: list[str] | None = None) -> Path:
    """Write one layer x role panel per score to ``path`` (PNG); returns the path.

    Cells of a panel share one colour scale; for scores where low means 'adapt here'
    (nfn) the colour map is reversed, so bright always marks where adapters should go.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt
    import numpy as np

    names = scores or list(result.scores)
    layers, roles = result.layers, result.roles
    ncols = min(2, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * (1.6 + 0.9 * len(roles)), nrows * (1.4 + 0.3 * len(layers))),
        squeeze=False,
    )
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        grid = result.grid(name)
        data = np.array(
            [[grid.get(layer, {}).get(role, np.nan) for role in roles] for layer in layers]
        )
        higher = SCORES[name].higher_is_important if name in SCORES else True
        im = draw_heatmap(
            ax,
            data,
            layers,
            roles,
            reverse=not higher,
            fmt=".3g",
            fontsize=7,
            tick_fontsize=8,
            cell_labels=len(layers) * len(roles) <= 64,  # small grids: values in the cells
        )
        ax.set_title(f"{name} ({'high' if higher else 'low'} = adapt here)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    meta = result.meta
    fig.suptitle(
        f"probe: {meta.get('model', '?')} on {meta.get('dataset', '?')} "
        f"({meta.get('tokens', '?')} tokens, seed {meta.get('seed', '?')})",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
