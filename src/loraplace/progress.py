"""Plain progress lines of training runs, for output that is not a terminal.

On a terminal ``loraplace run`` draws rich bars (step, loss, tokens/s, time left) that
redraw in place. In a log or CI, rich draws nothing, and a run on a real model printed
nothing for minutes until it ended. ``StepLines`` prints the same facts as one plain line
at most every ``every`` seconds: ``label: step 40/200, loss 2.3456, 1,234 tok/s, 1m20s left``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PLAIN_EVERY_S = 10.0  # seconds between plain lines: often enough to see life, rare in a log


def duration(seconds: float) -> str:
    """A short duration: 42s, 3m05s, 1h02m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StepLines:
    """Rate-limited plain lines of one run's progress at a time.

    emit: where a line goes (e.g. a rich console's ``print``); clock: seconds (for tests).
    The time left is the run's elapsed time per step so far, times the steps still to go.
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        every: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.every, self.clock = emit, every, clock
        self.label = "run"
        self._start = self._last = clock()

    def start(self, label: str) -> None:
        """A new run begins: its first line comes ``every`` seconds from now."""
        self.label = label
        self._start = self._last = self.clock()

    def step(self, step: int, steps: int, loss: float, tokens_per_s: float) -> str | None:
        """Print (and return) the progress line when ``every`` seconds have passed."""
        now = self.clock()
        if now - self._last < self.every or step <= 0:
            return None
        self._last = now
        left = (now - self._start) / step * max(0, steps - step)
        line = (
            f"{self.label}: step {step}/{steps}, loss {loss:.4f}, "
            f"{tokens_per_s:,.0f} tok/s, {duration(left)} left"
        )
        self.emit(line)
        return line
