"""The report's figures (matplotlib, Agg): PNG at 300 dpi plus PDF, each with a caption
written from the data it shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display, and the fastest backend for files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from loraplace.analysis import Front, Importance, Summary  # noqa: E402
from loraplace.heatmap import draw_heatmap  # noqa: E402
from loraplace.metrics import EVAL_LOSS  # noqa: E402
from loraplace.report import fmt  # noqa: E402
from loraplace.report.escape import U, mpl  # noqa: E402
from loraplace.report.png import write_png  # noqa: E402

DPI = 300
_AXIS = {
    "params": "trainable parameters",
    "time": "train time (s)",
    "forgetting": "forgetting (nats)",
}


@dataclass(frozen=True)
class FigureFile:
    """A written figure: its name, the files, and a caption in parts (str or U)."""

    name: str
    title: str
    caption: list[str]
    png: Path
    pdf: Path


def _save(fig, out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    # Solve the layout once, at the PNG's dpi (the same layout as letting each save solve
    # it), then drop the engine: with one set, every savefig draws the whole
    # figure once more just to lay it out (~20 % of the figures' time).
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.set_dpi(DPI)
        engine.execute(fig)
    with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # None under these rc settings: no engine at all
    write_png(fig, png, DPI)
    # Fixed metadata keeps the PDF bytes reproducible across rebuilds.
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return png, pdf


def _short(name: str, n: int = 28) -> str:
    return mpl(name if len(name) <= n else name[: n - 1] + "…")


def loss_figure(s: Summary, out: Path) -> FigureFile:
    """Figure 1: eval loss with CI bars, beside trainable params and train time."""
    ps = s.placements
    names = [_short(p.placement) for p in ps]
    y = np.arange(len(ps))
    has_time = any(p.train_time for p in ps)
    ncol = 3 if has_time else 2
    fig, axes = plt.subplots(
        1, ncol, figsize=(4.0 * ncol, 0.5 * len(ps) + 1.8), sharey=True, layout="constrained"
    )
    ax = axes[0]
    ax.barh(
        y, [p.loss.mean for p in ps], xerr=[p.loss.ci or 0 for p in ps], color="#4C72B0", capsize=3
    )
    lo = min(p.loss.low for p in ps)
    hi = max(p.loss.high for p in ps)
    if s.zero_shot:
        ax.axvline(s.zero_shot.loss.mean, color="#C44E52", ls="--", lw=1, label="zero-shot")
        hi = max(hi, s.zero_shot.loss.mean)
    if s.floor is not None:
        ax.axvline(s.floor, color="#55A868", ls=":", lw=1, label="floor")
        lo = min(lo, s.floor)
    pad = 0.08 * (hi - lo or 1)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("eval loss (nats), mean ± 95 % CI")
    if s.zero_shot or s.floor is not None:
        ax.legend(loc="best", fontsize=7)
    axes[1].barh(y, [p.trainable_params or 0 for p in ps], color="#8172B2")
    axes[1].set_xlabel("trainable parameters")
    axes[1].xaxis.set_major_formatter(EngFormatter(sep=""))
    if has_time:
        axes[2].barh(
            y,
            [p.train_time.mean if p.train_time else 0 for p in ps],
            xerr=[(p.train_time.ci or 0) if p.train_time else 0 for p in ps],
            color="#CCB974",
            capsize=3,
        )
        axes[2].set_xlabel("train time (s), mean ± 95 % CI")
    for a in axes:
        a.grid(axis="x", alpha=0.3)
    png, pdf = _save(fig, out, "loss_params_time")
    best = min(ps, key=lambda p: p.loss.mean)
    worst = max(ps, key=lambda p: p.loss.mean)
    cap = [
        f"Eval loss (mean ± 95 % CI over seeds) of {len(ps)} placements, beside their "
        "trainable parameters and train time. Lowest loss: ",
        U(best.placement),
        f" ({fmt.loss_ci(best.loss)} nats, {best.loss.n} seeds); highest: ",
        U(worst.placement),
        f" ({fmt.loss_ci(worst.loss)} nats).",
    ]
    if s.zero_shot:
        cap.append(f" The dashed line is the zero-shot loss ({fmt.loss(s.zero_shot.loss.mean)}).")
    if s.floor is not None:
        cap.append(f" The dotted line is the floor ({fmt.loss(s.floor)}).")
    return FigureFile("loss_params_time", "Loss, parameters and time", cap, png, pdf)


def _front_panel(ax, front: Front, s: Summary, axis: str) -> None:
    xs = [p.x for p in front.points]
    ax.scatter(xs, [p.y for p in front.points], color="#4C72B0", zorder=3)
    for p in front.points:
        est = s.get(p.placement).loss
        ax.errorbar(p.x, p.y, yerr=est.ci or 0, color="#4C72B0", lw=1, zorder=2)
        ax.annotate(
            _short(p.placement, 20),
            (p.x, p.y),
            fontsize=6,
            xytext=(4, 3),
            textcoords="offset points",
        )
    fx = [p.x for p in front.front]
    ax.step(
        fx, [p.y for p in front.front], where="post", color="#C44E52", lw=1.2, label="Pareto front"
    )
    if s.zero_shot and axis != "forgetting":
        ax.axhline(s.zero_shot.loss.mean, color="grey", ls="--", lw=0.8, label="zero-shot")
    if axis == "params" and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    elif axis == "params":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.margins(x=0.22)  # room for the labels of the right-most points
    ax.set_xlabel(_AXIS[axis])
    ax.set_ylabel("eval loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def tradeoff_figure(s: Summary, fr: dict[str, Front], out: Path) -> FigureFile | None:
    """Figure 2: loss against params, time and (if measured) forgetting, with Pareto fronts."""
    axes_used = [a for a in ("params", "time", "forgetting") if a in fr]
    if not axes_used:
        return None
    fig, axes = plt.subplots(
        1, len(axes_used), figsize=(4.2 * len(axes_used), 3.6), layout="constrained", squeeze=False
    )
    for ax, axis in zip(axes[0], axes_used, strict=True):
        _front_panel(ax, fr[axis], s, axis)
    png, pdf = _save(fig, out, "tradeoff")
    cap: list[str] = [
        "Trade-off between eval loss and cost; the line joins the Pareto-optimal "
        "placements (no other placement is cheaper and better)."
    ]
    for axis in axes_used:
        names = fr[axis].front
        cap.append(f" Front over {_AXIS[axis]}: ")
        for i, pt in enumerate(names):
            cap += [U(pt.placement), f" ({fmt.cost(axis, pt.x)}, {fmt.loss(pt.y)})"]
            cap.append(", " if i < len(names) - 1 else ".")
    if "forgetting" in axes_used:
        cap.append(" Learning against forgetting: lower-left is better on both.")
    return FigureFile("tradeoff", "Efficiency–performance trade-off", cap, png, pdf)


def _mean_curve(runs, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    series = [dict(r.curves[name]) for r in runs if r.curves.get(name)]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(c) for c in series)))
    if not steps:
        return None
    return np.array(steps), np.array([np.mean([c[st] for c in series]) for st in steps])


def curves_figure(s: Summary, out: Path) -> FigureFile | None:
    """Learning curves: train loss (smoothed seed mean) and eval loss per placement."""
    kinds = [
        k
        for k in ("train_loss", EVAL_LOSS)
        if any(r.curves.get(k) for p in s.placements for r in p.runs)
    ]
    if not kinds:
        return None
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(5.0 * len(kinds), 3.6), layout="constrained", squeeze=False
    )
    finals = []
    for ax, kind in zip(axes[0], kinds, strict=True):
        for i, p in enumerate(s.placements):
            mc = _mean_curve(p.runs, kind)
            if mc is None:
                continue
            x, yv = mc
            if kind == "train_loss" and len(yv) > 20:
                w = max(1, len(yv) // 20)  # moving average over ~5 % of the steps
                yv = np.convolve(yv, np.ones(w) / w, mode="valid")
                x = x[w - 1 :]
            ax.plot(
                x,
                yv,
                lw=1.2,
                color=f"C{i % 10}",
                ls=("-", "--", ":", "-.")[i // 10 % 4],  # the 10 colours repeat: vary the dash
                label=_short(p.placement, 24),
                marker="o" if kind == EVAL_LOSS else None,
                ms=3,
            )
            if kind == "train_loss":
                finals.append((p.placement, float(yv[-1]), int(x[-1])))
        if s.zero_shot:
            ax.axhline(s.zero_shot.loss.mean, color="grey", ls="--", lw=0.8, label="zero-shot")
        ax.set_xlabel("step")
        ax.set_ylabel(kind.replace("_", " ") + " (nats)")
        ax.grid(alpha=0.3)
    if len(s.placements) > 5:  # many lines: the legend goes beside the plots, not over them
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    else:
        axes[0][-1].legend(fontsize=7, loc="best")
    png, pdf = _save(fig, out, "learning_curves")
    n_seeds = sorted({p.loss.n for p in s.placements})
    cap = [
        "Learning curves, mean over the finished seeds ("
        + "/".join(map(str, n_seeds))
        + " per placement); train loss smoothed by a moving "
        "average over about 5 % of the steps. Diverged runs are left out."
    ]
    if finals:
        lo = min(finals, key=lambda f: f[1])
        cap += [" Lowest smoothed train loss at the last step: ", U(lo[0]), "."]
    return FigureFile("learning_curves", "Learning curves", cap, png, pdf)


def heatmap_figure(imp: Importance, out: Path) -> FigureFile | None:
    """Importance heatmap, layer x role, when nested placements single out cells."""
    hm = imp.heatmap
    if hm is None:
        return None
    fig, ax = plt.subplots(
        figsize=(1.3 * len(hm.roles) + 2.2, 0.35 * len(hm.layers) + 1.6), layout="constrained"
    )
    im = draw_heatmap(ax, hm.values, hm.layers, [mpl(r) for r in hm.roles])
    fig.colorbar(im, ax=ax, label="gain per adapted module (nats)")
    png, pdf = _save(fig, out, "importance_heatmap")
    flat = np.nanargmax(hm.values)
    bi, bj = np.unravel_index(flat, hm.values.shape)
    cap = [
        f"Marginal gain per adapted module by layer and role, from {hm.comparisons} nested "
        "comparisons (each comparison's gain is spread evenly over the modules it adds; grey: "
        f"no comparison covers the cell). Largest: layer {hm.layers[bi]}, ",
        U(hm.roles[bj]),
        ".",
    ]
    return FigureFile("importance_heatmap", "Importance heatmap", cap, png, pdf)
