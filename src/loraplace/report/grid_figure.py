"""The loss-vs-learning-rate figure: every placement's validation loss at each lr point."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from loraplace.analysis.fair import FairComparison
from loraplace.analysis.read import StudyData
from loraplace.analysis.selection import grid_points_of
from loraplace.metrics import EVAL_LOSS
from loraplace.report.escape import U
from loraplace.report.figures import FigureFile, _save, _short


def lr_curves(study: StudyData, task: str | None, placements: list[str], by: str):
    """placement -> sorted [(lr, mean, ci, label)]; the best point per lr when other axes vary."""
    out = {}
    for base in placements:
        best: dict[float, tuple] = {}
        for p in grid_points_of(study, task, base, by):
            lr = p.setting.get("lr")
            if lr is None:
                continue
            if lr not in best or p.score.mean < best[lr][1]:
                best[lr] = (lr, p.score.mean, p.score.ci or 0.0, p.label)
        if len(best) > 1:
            out[base] = sorted(best.values())
    return out


def loss_vs_lr_figure(fair: FairComparison, study: StudyData, out: Path) -> FigureFile | None:
    """One panel per task: validation loss against lr per placement, the selection ringed."""
    by = fair.select_by or EVAL_LOSS
    panels = []
    for t in fair.tasks:
        names = list(dict.fromkeys(s.placement for s in fair.selections if s.task == t.task))
        curves = lr_curves(study, t.task, names, by)
        if curves:
            panels.append((t.task, curves))
    if not panels:
        return None
    chosen = {(s.task, s.placement): s.chosen.label for s in fair.selections}
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, layout="constrained"
    )
    for ax, (task, curves) in zip(axes[0], panels, strict=True):
        for base, pts in curves.items():
            xs, ys, cis = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
            line = ax.errorbar(xs, ys, yerr=cis, marker="o", ms=4, capsize=3, label=_short(base))
            for x, y, _, label in pts:
                if chosen.get((task, base)) == label:
                    ax.plot(x, y, "o", ms=11, mfc="none", color=line[0].get_color())
        ax.set_xscale("log")
        lrs = sorted({p[0] for pts in curves.values() for p in pts})
        ax.set_xticks(lrs, [f"{x:g}" for x in lrs])  # the grid's own values, nothing else
        ax.minorticks_off()
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"validation {by}, mean ± 95 % CI")
        if task is not None:
            ax.set_title(_short(task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    png, pdf = _save(fig, out, "loss_vs_lr")
    cap = [
        f"Validation {by} (mean ± 95 % CI over seeds) of every placement at each learning "
        "rate of the grid; the ringed point is the setting selected for that placement. "
        "Where other axes vary too, each lr shows its best setting."
    ]
    if any(t.ranking_flips for t in fair.tasks):
        flipped = [t for t in fair.tasks if t.ranking_flips]
        cap += [" The ranking of placements changes between grid points on "]
        cap += [U(", ".join(str(t.task or "this task") for t in flipped)), "."]
    return FigureFile("loss_vs_lr", "Loss against learning rate", cap, png, pdf)
