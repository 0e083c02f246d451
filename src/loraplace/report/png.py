"""PNG files written from a figure's own Agg canvas, at the dpi its layout was solved for.

The encoding runs inline, on the caller's thread: a second encoder thread measured no gain
(2.79 s inline against 2.85 s threaded for the fixture report, a 0.98 ratio) and once
raced the HTML that embeds the files. When ``write_png`` returns, the file is whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _encode(pixels: np.ndarray, path: Path, dpi: float) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="png", dpi=(dpi, dpi))


def write_png(fig, path: Path, dpi: float) -> None:
    """Draw ``fig`` at ``dpi`` (Agg) and write it as ``path``: RGB when it is opaque."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    pixels = rgba[..., :3].copy() if (rgba[..., 3] == 255).all() else rgba.copy()
    _encode(pixels, path, dpi)
