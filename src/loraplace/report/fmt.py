"""How each kind of number is rounded, in one place: tables, prose and tests all use these."""

from __future__ import annotations

from loraplace.analysis.aggregate import Estimate

MIB = 2**20


def loss(x: float) -> str:
    """Losses and loss differences in nats: 4 decimals."""
    return f"{x:.4f}"


def signed_loss(x: float) -> str:
    return f"{x:+.4f}"


def loss_ci(e: Estimate) -> str:
    """'3.4400 ± 0.0183', or '3.4400' for a single seed."""
    return loss(e.mean) if e.ci is None else f"{loss(e.mean)} ± {loss(e.ci)}"


def ppl(x: float) -> str:
    return f"{x:.2f}"


def count(x: float) -> str:
    """Parameter and token counts: integers with thousands separators."""
    return f"{round(x):,}"


def pct(x: float) -> str:
    """Percentages: 2 decimals, no sign."""
    return f"{x:.2f}"


def signed_pct(x: float) -> str:
    return f"{x:+.2f}"


def pct_ci(e: Estimate, scale: float = 100.0) -> str:
    """A fraction estimate as a percentage with CI: '57.40 ± 1.20'."""
    m = pct(e.mean * scale)
    return m if e.ci is None else f"{m} ± {pct(e.ci * scale)}"


def factor(x: float) -> str:
    """Ratios such as speed-up and parameter reduction: '1.87×'."""
    return f"{x:.2f}×"


def seconds(x: float) -> str:
    return f"{x:.1f}"


def seconds_ci(e: Estimate) -> str:
    return seconds(e.mean) if e.ci is None else f"{seconds(e.mean)} ± {seconds(e.ci)}"


def rate(x: float) -> str:
    """Throughput in tokens/s: integer with separators."""
    return f"{x:,.0f}"


def mib(x_bytes: float) -> str:
    return f"{x_bytes / MIB:,.1f}"


def pvalue(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def stat(x: float | None) -> str:
    """Test statistics: 3 decimals."""
    return "n/a" if x is None else f"{x:.3f}"


def ratio(x: float | None) -> str:
    """Efficiency ratios (nats per M params, per second): 4 significant digits."""
    return "n/a" if x is None else f"{x:.4g}"


def cost(axis: str, x: float) -> str:
    """A budget on a Pareto axis in its own unit."""
    return {"params": f"{count(x)} params", "time": f"{seconds(x)} s"}.get(axis, loss(x))
