"""Progress of long first-use work (pretraining, tokenising), on a terminal and off it.

A rich status line redraws in place on a terminal but prints nothing when stderr is a
file or a CI log, so a redirected first run looked dead for minutes. ``Heartbeat`` keeps
the status line on a terminal and otherwise prints one plain line every few seconds.
Work that ends within the first interval shows nothing at all.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only when a status line is drawn
    from rich.status import Status

EVERY_S = 5.0  # seconds between plain progress lines when stderr is not a terminal


class Heartbeat:
    """A progress line for one long task: ``with Heartbeat(label) as hb: hb.update(text)``.

    stream: where plain lines go (stderr by default); terminal: force either mode
        (None = ask the stream).
    """

    def __init__(
        self,
        label: str,
        *,
        every: float = EVERY_S,
        stream: TextIO | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.label = label
        self.every = every
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = terminal if terminal is not None else bool(isatty and isatty())
        self.start = time.perf_counter()
        self._last_line = self.start
        self._status: Status | None = None

    def __enter__(self) -> Heartbeat:
        self.start = self._last_line = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.__exit__(exc_type, exc, tb)
            self._status = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, text: str) -> None:
        """Show ``label: text, N s``: redrawn on a terminal, else a line every ``every`` s."""
        line = f"{self.label}: {text}, {self.elapsed:.0f} s"
        if self._status is not None:
            self._status.update(line)
            return
        now = time.perf_counter()
        if now - self._last_line < self.every:
            return
        self._last_line = now
        if self.terminal and self._start_status(line):
            return
        print(line, file=self.stream, flush=True)

    def _start_status(self, line: str) -> bool:
        """Start the redrawn line; False when another live display owns the terminal."""
        from rich.console import Console
        from rich.errors import LiveError

        status = Console(file=self.stream).status(line)
        try:
            status.__enter__()
        except LiveError:
            return False
        self._status = status
        return True


class Stages:
    """A Heartbeat that keeps beating through one long call: ``stages.enter("stage text")``.

    A GGUF dequantization is a single call into transformers lasting up to minutes, with no
    callback to hang an ``update`` on; a daemon thread shows the current stage every
    ``tick`` seconds instead, so the line (and its elapsed time) stays alive throughout.
    """

    def __init__(self, beat: Heartbeat, tick: float = 1.0) -> None:
        self.beat = beat
        self.tick = tick
        self.stage = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self.beat.update(self.stage)

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.beat.update(stage)

    def __enter__(self) -> Stages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
