"""The Results and Statistics sections: the headline table and figure, coverage, runs
left out, and the paired tests. Sentences carry the numbers of the tables."""

from __future__ import annotations

from loraplace.analysis import Summary
from loraplace.analysis.aggregate import MIN_SEEDS
from loraplace.analysis.stats import ALPHA, PairedTest, find_test
from loraplace.report import figures as figs
from loraplace.report import fmt
from loraplace.report import section_tables as st
from loraplace.report import tables as tb
from loraplace.report.escape import U
from loraplace.report.render import Bullets, Heading, Para
from loraplace.report.section_context import SectionContext


def verdict(t: PairedTest | None) -> str:
    if t is None or t.p_holm is None:
        return "not testable"
    if t.within_noise:
        return f"within noise (Holm p = {fmt.pvalue(t.p_holm)})"
    return f"significant (Holm p = {fmt.pvalue(t.p_holm)})"


def _best_placement_text(s: Summary) -> Para:
    """The Results section's first sentence: the lowest loss, its cost and its gain."""
    best = min(s.placements, key=lambda p: p.loss.mean)
    first = [
        U(best.placement),
        f" has the lowest eval loss, {fmt.loss_ci(best.loss)} nats "
        f"(mean ± 95 % CI over {best.loss.n} seeds; perplexity {fmt.ppl(best.ppl)})",
    ]
    if best.trainable_params is not None and best.trainable_pct is not None:
        first.append(
            f", training {fmt.count(best.trainable_params)} parameters "
            f"({fmt.pct(best.trainable_pct)} % of the total)"
        )
    first.append(".")
    if best.loss_reduction is not None and s.zero_shot is not None:
        first.append(
            f" It is {fmt.loss_ci(best.loss_reduction)} nats below the zero-shot model "
            f"({fmt.loss(s.zero_shot.loss.mean)})"
        )
        if best.gap_closed is not None and s.floor is not None:
            first.append(
                f" and closes {fmt.pct_ci(best.gap_closed)} % of the gap to the floor "
                f"({fmt.loss(s.floor)})"
            )
        first.append(".")
    return Para(first)


def _results_paragraphs(s: Summary, tests: list[PairedTest]) -> list[Para | Bullets]:
    """The Results section: sentences carrying the table's numbers and CIs."""
    paras: list[Para | Bullets] = [_best_placement_text(s)]
    ref = s.get(s.reference) if s.reference else None
    if ref is not None:
        items: list[list[str]] = []
        for p in s.placements:
            if p is ref:
                continue
            parts = [
                U(p.placement),
                f": {fmt.loss_ci(p.loss)} nats "
                f"({fmt.signed_pct(p.rel_loss_vs_ref or 0)} % against the reference)",
            ]
            if p.trainable_params is not None:
                parts.append(f" with {fmt.count(p.trainable_params)} trainable parameters")
            if p.speedup_vs_ref is not None:
                parts.append(f", training {fmt.factor(p.speedup_vs_ref)} as fast")
            parts.append(
                f"; the difference is {verdict(find_test(tests, p.placement, ref.placement))}."
            )
            items.append(parts)
        lead = ["Against the reference ", U(ref.placement)]
        if ref.trainable_params is not None:
            lead.append(
                f" ({fmt.count(ref.trainable_params)} trainable parameters, "
                f"{fmt.loss_ci(ref.loss)} nats)"
            )
        lead.append(":")
        paras.append(Para(lead))
        paras.append(Bullets(items))
    if s.has_forgetting:
        fs = [(p.placement, p.forgetting.mean) for p in s.placements if p.forgetting is not None]
        lo, lo_mean = min(fs, key=lambda f: f[1])
        hi, hi_mean = max(fs, key=lambda f: f[1])
        paras.append(
            Para(
                [
                    "Forgetting (retain loss increase on the base distribution) ranges from "
                    f"{fmt.signed_loss(lo_mean)} nats (",
                    U(lo),
                    f") to {fmt.signed_loss(hi_mean)} nats (",
                    U(hi),
                    ").",
                ]
            )
        )
    if s.excluded:
        parts = [f"{len(s.excluded)} run(s) contribute no numbers: "]
        for i, r in enumerate(s.excluded):
            parts += [U(r.placement), f" seed {r.seed} {r.status}"]
            if r.diverged_step is not None:
                parts.append(f" at step {r.diverged_step}")
            parts.append("; " if i < len(s.excluded) - 1 else ".")
        paras.append(Para(parts))
    return paras


def _flagged_text(flagged) -> list:
    """What runs that end worse than the untrained model suggest (train/divergence.py)."""
    names = sorted({r.placement for r in flagged})
    parts: list = [
        f"{len(flagged)} run(s) trained to the end but finished with an eval loss above the "
        "zero-shot model's on the same tokens ("
    ]
    for i, name in enumerate(names):
        parts += [U(name), ", " if i < len(names) - 1 else ""]
    parts.append(
        "). Training that leaves a model worse than not training at all suggests a "
        "learning rate too high for these placements, or a bug; it is not evidence about "
        "where adapters belong, so these runs are shown here and never averaged."
    )
    return parts


def _stats_text(tests: list[PairedTest]) -> list[str]:
    testable = [t for t in tests if t.p_holm is not None]
    sig = [t for t in testable if not t.within_noise]
    text = [
        f"{len(tests)} pairwise comparisons, paired over the seeds both placements finished; "
        f"{len(sig)} differ significantly after Holm correction at α = {ALPHA}, "
        f"{len(testable) - len(sig)} are within noise"
    ]
    if len(testable) < len(tests):
        text.append(f", and {len(tests) - len(testable)} could not be tested")
    text.append(". A difference within noise is no evidence that either placement is better.")
    return text


def add_results(r: SectionContext) -> None:
    """The results table, the loss figure, coverage and runs left out."""
    doc, s, fair, tests, table, figure = r.doc, r.s, r.fair, r.tests, r.table, r.figure
    fig_dir = r.fig_dir
    doc.add(Heading(2, ["Results"]))
    if fair is not None and fair.on_test:
        doc.add(
            Para(
                [
                    "Every loss from here on is the test-split loss of the setting selected "
                    "for each placement on validation (see the Selection section); the "
                    "selection never read it."
                ]
            )
        )
    elif fair is not None and fair.select_by and not fair.selections:
        doc.add(
            Para(
                [
                    "The study selects by ",
                    U(fair.select_by),
                    ", but no finished run stores it: nothing was selected, and every grid "
                    "point is shown at its validation numbers.",
                ],
                "warning",
            )
        )
    for p in _results_paragraphs(s, tests):
        doc.add(p)
    doc.add(table(tb.results_table(s)))
    figure(figs.loss_figure(s, fig_dir))
    doc.add(table(tb.coverage_table(s)))
    if s.excluded:
        doc.add(Heading(3, ["Runs that contribute no numbers"]))
        doc.add(
            Para(
                [
                    "Diverged, failed, interrupted and unfinished runs, and runs flagged as "
                    "worse than zero-shot, are listed here and left out of every mean, test "
                    "and figure."
                ]
            )
        )
        doc.add(table(tb.excluded_table(s)))
        flagged = [r for r in s.excluded if r.status == "flagged"]
        if flagged:
            doc.add(Para(_flagged_text(flagged)))


def add_statistics(r: SectionContext) -> None:
    """Seeds per placement and the paired tests."""
    doc, s, tests, table = r.doc, r.s, r.tests, r.table
    doc.add(Heading(2, ["Statistics"]))
    few = [p for p in s.placements if p.loss.n < MIN_SEEDS]
    seeds = sorted({p.loss.n for p in s.placements})
    doc.add(
        Para(
            [f"Seeds per placement: {', '.join(map(str, seeds))}."]
            + (
                [
                    f" Fewer than {MIN_SEEDS} for {len(few)} placement(s): "
                    "treat their tests with care."
                ]
                if few
                else []
            )
        )
    )
    if tests:
        doc.add(Para(_stats_text(tests)))
        doc.add(table(st.stats_table(tests)))
