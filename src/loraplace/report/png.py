"""PNG files written on a second thread while the report goes on drawing.

A 300-dpi figure's zlib compression is about a third of its time, and Pillow releases the
GIL while it compresses, so on two cores it overlaps the next figure's drawing. Inside
``png_writer()`` ``write_png`` queues the file; outside it writes at once. The block's
end waits for every file and raises the first error, so nothing is renamed into place
half-written. Whatever reads the PNG files (report.html embeds them) runs after the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

# The open png_writer block of this thread, if any: its encoder thread and queued files.
_writer: ContextVar[tuple[ThreadPoolExecutor, list[Future]] | None] = ContextVar(
    "png_writer", default=None
)


def _encode(pixels: np.ndarray, path: Path, dpi: float) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="png", dpi=(dpi, dpi))


def write_png(fig, path: Path, dpi: float) -> None:
    """Draw ``fig`` at ``dpi`` (Agg) and write it as ``path``: RGB when it is opaque."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    pixels = rgba[..., :3].copy() if (rgba[..., 3] == 255).all() else rgba.copy()
    writer = _writer.get()
    if writer is None:
        _encode(pixels, path, dpi)
    else:
        pool, pending = writer
        pending.append(pool.submit(_encode, pixels, path, dpi))


@contextmanager
def png_writer() -> Iterator[None]:
    """PNGs written by ``write_png`` inside the block are encoded on a second thread."""
    if _writer.get() is not None:  # nested: the outer block waits for everything
        yield
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="png")
    pending: list[Future] = []
    token = _writer.set((pool, pending))
    try:
        yield
        for f in pending:
            f.result()
    finally:
        _writer.reset(token)
        pool.shutdown(wait=True)
