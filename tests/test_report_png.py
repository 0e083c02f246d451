"""report/png.py: the same pixels as matplotlib's own PNG, written on a second thread
inside ``png_writer()``, and an encoding error raised before the block ends."""

import threading

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from loraplace.report import png  # noqa: E402
from loraplace.report.png import png_writer, write_png  # noqa: E402


def _figure(transparent: bool = False):
    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
    ax.plot([0, 1, 2], [2.0, 1.0, 1.5], marker="o", label="loss")
    ax.set_xlabel("step")
    ax.legend()
    if transparent:
        fig.patch.set_alpha(0.0)
    return fig


@pytest.mark.parametrize("transparent, mode", [(False, "RGB"), (True, "RGBA")])
def test_pixels_and_dpi_match_savefig(tmp_path, transparent, mode):
    fig = _figure(transparent)
    fig.savefig(tmp_path / "mpl.png", dpi=150)
    fig.set_layout_engine("none")  # keep the layout the first save solved
    write_png(fig, tmp_path / "ours.png", 150)
    plt.close(fig)
    ref, ours = Image.open(tmp_path / "mpl.png"), Image.open(tmp_path / "ours.png")
    assert ours.mode == mode and ours.size == ref.size == (450, 300)
    assert ours.info["dpi"] == pytest.approx(ref.info["dpi"])
    assert np.array_equal(np.asarray(ours.convert("RGBA")), np.asarray(ref.convert("RGBA")))


def _record_threads(monkeypatch) -> list[str]:
    """Where each PNG is encoded: the names of the threads that call ``png._encode``."""
    threads: list[str] = []
    encode = png._encode

    def recording(*args):
        threads.append(threading.current_thread().name)
        encode(*args)

    monkeypatch.setattr(png, "_encode", recording)
    return threads


def test_the_writer_encodes_on_its_thread_and_finishes_before_the_block_ends(tmp_path, monkeypatch):
    threads = _record_threads(monkeypatch)
    with png_writer():
        for i in range(3):
            fig = _figure()
            write_png(fig, tmp_path / f"f{i}.png", 100)
            plt.close(fig)
    assert [Image.open(tmp_path / f"f{i}.png").size for i in range(3)] == [(300, 200)] * 3
    assert len(threads) == 3 and all(t.startswith("png") for t in threads)
    fig = _figure()
    write_png(fig, tmp_path / "direct.png", 100)  # outside a block: on the caller's thread
    plt.close(fig)
    assert threads[-1] == threading.current_thread().name


def test_an_encoding_error_is_raised_at_the_end_of_the_block(tmp_path):
    fig = _figure()
    missing = tmp_path / "no-such-dir" / "f.png"
    after_the_call = False
    with pytest.raises(FileNotFoundError):
        with png_writer():
            write_png(fig, missing, 100)  # queued: the call returns, the block raises
            after_the_call = True
    assert after_the_call
    with pytest.raises(FileNotFoundError):
        write_png(fig, missing, 100)  # outside a block: at once
    plt.close(fig)
    with png_writer():  # the writer is usable again after a failed block
        write_png(_figure(), tmp_path / "ok.png", 100)
    assert (tmp_path / "ok.png").exists()
