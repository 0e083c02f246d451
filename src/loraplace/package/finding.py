"""One line of a package's verification: which check, whether it passed, and what it saw."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    ok: bool
    check: str  # files | store | report | retrain
    text: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check:8} {self.text}"
