"""The layer x role heatmap of a probe: one panel per score, written as a PNG."""

from __future__ import annotations

from pathlib import Path

from loraplace.probe.scores import SCORES, ProbeResult


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
        im = ax.imshow(data, aspect="auto", cmap="viridis" if higher else "viridis_r")
        ax.set_xticks(range(len(roles)), roles, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(x) for x in layers], fontsize=8)
        ax.set_ylabel("layer")
        ax.set_title(f"{name} ({'high' if higher else 'low'} = adapt here)", fontsize=9)
        if len(layers) * len(roles) <= 64:  # small grids: print the values in the cells
            lo, hi = np.nanmin(data), np.nanmax(data)
            for i in range(len(layers)):
                for j in range(len(roles)):
                    v = data[i, j]
                    if np.isnan(v):
                        continue
                    t = (v - lo) / (hi - lo) if hi > lo else 0.5
                    bright = t > 0.5 if higher else t < 0.5  # viridis is light at its top
                    ax.text(
                        j,
                        i,
                        f"{v:.3g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if bright else "white",
                    )
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
