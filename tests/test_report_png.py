"""report/png.py: the same pixels as matplotlib's own PNG, written whole on the caller's
thread before ``write_png`` returns, and an encoding error raised by the call."""

import threading

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from loraplace.report import png  # noqa: E402
from loraplace.report.png import write_png  # noqa: E402


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


def test_each_png_is_encoded_on_the_callers_thread_and_whole_on_return(tmp_path, monkeypatch):
    threads = _record_threads(monkeypatch)
    for i in range(3):
        fig = _figure()
        write_png(fig, tmp_path / f"f{i}.png", 100)
        plt.close(fig)
        assert Image.open(tmp_path / f"f{i}.png").size == (300, 200)  # before the next one
    assert threads == [threading.current_thread().name] * 3


def test_an_encoding_error_is_raised_by_the_call(tmp_path):
    fig = _figure()
    with pytest.raises(FileNotFoundError):
        write_png(fig, tmp_path / "no-such-dir" / "f.png", 100)
    write_png(fig, tmp_path / "ok.png", 100)  # the figure is still usable after a failure
    plt.close(fig)
    assert Image.open(tmp_path / "ok.png").size == (300, 200)
