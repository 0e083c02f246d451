"""The report's content: every section as a document of prose, tables and figures.

Sentences carry the numbers of the tables (same rounding, from ``fmt``); user strings are
``U`` parts so that each renderer escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loraplace.analysis import (
    Consistency,
    Summary,
    consistency,
    efficiency,
    fronts,
    guidelines,
    importance,
    paired_tests,
)
from loraplace.analysis.aggregate import MIN_SEEDS
from loraplace.analysis.fair import FairComparison
from loraplace.analysis.models import ModelComparison
from loraplace.analysis.stats import ALPHA, PairedTest, find_test
from loraplace.report import figures as figs
from loraplace.report import fmt
from loraplace.report import section_tables as st
from loraplace.report import tables as tb
from loraplace.report.comparisons import add_comparison_sections, guideline_notes, verdict_word
from loraplace.report.escape import U
from loraplace.report.methods import add_methods_section
from loraplace.report.render import (
    Bullets,
    Code,
    Document,
    FigureBlock,
    Heading,
    Para,
    TableBlock,
)
from loraplace.report.section_models import add_models_section
from loraplace.report.section_tasks import add_task_section
from loraplace.report.validation import add_budget_section, add_probe_section


def _verdict(t: PairedTest | None) -> str:
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
                f"; the difference is {_verdict(find_test(tests, p.placement, ref.placement))}."
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


def _consistency_text(c: Consistency) -> list[str]:
    text = [
        "Perplexity is exp of the token-weighted mean negative log-likelihood over all eval "
        "tokens, recomputed here from the stored loss. A mean of per-batch perplexities is "
        "larger (exp is convex, so by Jensen's inequality the mean of exp exceeds exp of the "
        "mean) and weighs every batch alike whatever its token count; it is not the "
        "perplexity of the eval set."
    ]
    infl = [r.inflation_pct for r in c.rows if r.inflation_pct is not None]
    if infl:
        text.append(
            f" Here it overstates perplexity by {fmt.signed_pct(min(infl))} % to "
            f"{fmt.signed_pct(max(infl))} %."
        )
    if c.reordered:
        text.append(
            " It also reorders the placements: ranked by mean batch perplexity they "
            "come out in a different order than by loss, so a study reporting it would "
            "contradict its own loss table. The loss and exp(loss) are the right numbers."
        )
    elif infl:
        text.append(
            " The order of the placements is the same either way, but only exp(loss) is "
            "comparable across studies."
        )
    return text


@dataclass
class _Report:
    """What every section reads: the study's summary and analyses, and the document,
    tables and figures being written (numbered in the order sections add them)."""

    s: Summary
    repro: dict
    fig_dir: Path
    metric: str
    fair: FairComparison | None
    doc: Document
    models: ModelComparison | None = None
    tests: list[PairedTest] = field(init=False)
    tables: list[tb.Table] = field(default_factory=list)
    figures: list[figs.FigureFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tests = paired_tests(self.s)

    def table(self, t: tb.Table) -> TableBlock:
        self.tables.append(t)
        return TableBlock(t, len(self.tables))

    def figure(self, f: figs.FigureFile | None) -> None:
        if f is not None:
            self.figures.append(f)
            self.doc.add(FigureBlock(f, len(self.figures)))


def _preamble(r: _Report) -> None:
    """Where the numbers come from, the tasks compared, warnings."""
    doc, s, study, fair = r.doc, r.s, r.s.study, r.fair
    cons = consistency(s)
    every_run = fair.study.runs if fair is not None else study.runs
    if r.models is not None:  # every model's runs, not the headline model's alone
        every_run = r.models.study.runs
    counts: dict[str, int] = {}
    for run in every_run:
        counts[run.status] = counts.get(run.status, 0) + 1
    status = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    doc.add(
        Para(
            [
                f"Built by loraplace from the results store alone ({len(every_run)} runs: "
                f"{status}). Every number below is computed from that store; the "
                "Reproducibility section names the command that rebuilds it."
            ]
        )
    )
    if r.models is not None:
        doc.add(
            Para(
                [
                    f"The study compares the placements on {len(r.models.models)} models (",
                    U(", ".join(r.models.models)),
                    "). Results and the sections after it describe the first, ",
                    U(r.models.models[0]),
                    "; the Models section sets all of them side by side.",
                ]
            )
        )
    if fair is not None and len(fair.tasks) > 1:
        names = ", ".join(str(t.task) for t in fair.tasks)
        doc.add(
            Para(
                [
                    f"The study compares the placements on {len(fair.tasks)} tasks (",
                    U(names),
                    "). Results and the sections after it describe the first, ",
                    U(str(fair.tasks[0].task)),
                    "; the Tasks section sets all of them side by side.",
                ]
            )
        )
    for w in s.warnings:
        doc.add(Para([U(w)], "warning"))
    for m in cons.mismatches:
        doc.add(
            Para(
                [
                    "stored eval_ppl of run ",
                    U(m.run_id),
                    " (",
                    U(m.placement),
                    ") is not exp(eval_loss); the report uses exp(eval_loss).",
                ],
                "warning",
            )
        )


def _methods(r: _Report) -> None:
    """Model, data, placements, settings, hardware, statistics."""
    add_methods_section(r.doc, r.table, r.s, len(r.tests))


def _headline_task(r: _Report) -> None:
    """The chosen task metric leads when it is the headline."""
    if r.metric != "loss":
        add_task_section(r.doc, r.table, r.s, r.metric)


def _results(r: _Report) -> None:
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


def _tasks(r: _Report) -> None:
    """Task metrics after the results when loss is the headline."""
    if r.metric == "loss":
        add_task_section(r.doc, r.table, r.s, r.metric)


def _comparisons(r: _Report) -> None:
    """Selection, tasks and verdicts of a fair comparison."""
    if r.fair is not None:
        add_comparison_sections(r.doc, r.table, r.figure, r.fair, r.fig_dir)


def _models(r: _Report) -> None:
    """Per-model results, the models' agreement and the cheap-proxy answer."""
    if r.models is not None:
        add_models_section(r.doc, r.table, r.models)


def _budget(r: _Report) -> None:
    """The equal-budget matching, when the study has a budget."""
    add_budget_section(r.doc, r.table, r.s)


def _statistics(r: _Report) -> None:
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


def _tradeoff(r: _Report) -> None:
    """Pareto fronts and efficiency per parameter and per second."""
    doc, s, table, figure, fig_dir = r.doc, r.s, r.table, r.figure, r.fig_dir
    fr, effs = fronts(s), efficiency(s)
    doc.add(Heading(2, ["Efficiency–performance trade-off"]))
    figure(figs.tradeoff_figure(s, fr, fig_dir))
    if effs:
        # `or 0.0` only for mypy: the None values are filtered out before max sees them.
        best_m = max(
            (e for e in effs if e.per_mparam is not None),
            key=lambda e: e.per_mparam or 0.0,
            default=None,
        )
        best_t = max(
            (e for e in effs if e.per_second is not None),
            key=lambda e: e.per_second or 0.0,
            default=None,
        )
        parts: list[str] = []
        if best_m:
            parts += [
                "Most loss reduction per million trainable parameters: ",
                U(best_m.placement),
                f" ({fmt.ratio(best_m.per_mparam)} nats per M params). ",
            ]
        if best_t:
            parts += [
                "Most per training second: ",
                U(best_t.placement),
                f" ({fmt.ratio(best_t.per_second)} nats per s).",
            ]
        doc.add(Para(parts))
        doc.add(table(st.efficiency_table(effs, s, fr)))


def _guidelines(r: _Report) -> None:
    """The best placement for each budget, read off the fronts."""
    doc, s, table = r.doc, r.s, r.table
    gl = guidelines(s, r.tests)
    doc.add(Heading(2, ["Practical guidelines"]))
    if gl:
        items = []
        for g in gl:
            p = s.get(g.placement)
            it = [
                f"With a budget of at least {fmt.cost(g.axis, g.budget)}: use ",
                U(g.placement),
                f" (eval loss {fmt.loss_ci(p.loss)})",
            ]
            if g.step_test is not None:
                word = verdict_word(r.fair, g.step_test) if r.fair is not None else None
                it.append(
                    f" — against the next cheaper choice: {word}"
                    if word
                    else " — over the next cheaper choice the gain is " + _verdict(g.step_test)
                )
            it.append(".")
            items.append(it)
        doc.add(
            Para(
                [
                    "Read off the Pareto fronts: for each budget, the placement with the lowest "
                    "loss that fits it. A step marked within noise buys nothing measurable."
                ]
            )
        )
        doc.add(Bullets(items))
        doc.add(table(st.guideline_table(gl, s)))
    else:
        doc.add(
            Para(["No placement reports trainable parameters or train time; no budget advice."])
        )

    if r.fair is not None:
        doc.add(*guideline_notes(r.fair))


def _importance(r: _Report) -> None:
    """Roles and layers ranked by paired gains of nested placements."""
    doc, table, figure, fig_dir = r.doc, r.table, r.figure, r.fig_dir
    imp = importance(r.s)
    doc.add(Heading(2, ["Importance hierarchy"]))
    if imp.empty:
        doc.add(
            Para(
                [
                    "The study holds no nested placements that differ by exactly one role or "
                    "one layer range (single role, single layer range, leave-one-out), so no "
                    "importance ranking can be read off it. Add such placements to rank roles "
                    "and layers."
                ]
            )
        )
    else:
        doc.add(
            Para(
                [
                    "Two placements are compared when one adapts everything the other does "
                    "(same rank and alpha) plus all its modules of exactly one role, or "
                    "everything on one contiguous layer range; zero-shot counts as the empty "
                    "placement. The gain is the loss difference, paired over shared seeds; "
                    "a unit's rank is by its mean gain over the comparisons named beside it."
                ]
            )
        )
        top = imp.roles[0] if imp.roles else imp.layers[0]
        doc.add(
            Para(
                [
                    "Most important: ",
                    U(st.unit_label(top.kind, top.unit)),
                    f" (mean gain {fmt.signed_loss(top.gain)} nats over {len(top.comparisons)} "
                    "comparison(s)).",
                ]
            )
        )
        doc.add(table(st.importance_table(imp)))
        figure(figs.heatmap_figure(imp, fig_dir))


def _probe(r: _Report) -> None:
    """Probe scores set against trained single-role placements."""
    add_probe_section(r.doc, r.table, r.s)


def _consistency(r: _Report) -> None:
    """Whether stored perplexities agree with the losses."""
    doc, table = r.doc, r.table
    cons = consistency(r.s)
    doc.add(Heading(2, ["Loss and perplexity consistency"]))
    doc.add(Para(_consistency_text(cons)))
    doc.add(table(st.consistency_table(cons)))


def _curves(r: _Report) -> None:
    """Learning curves."""
    doc, s, figure, fig_dir = r.doc, r.s, r.figure, r.fig_dir
    doc.add(Heading(2, ["Learning curves"]))
    figure(figs.curves_figure(s, fig_dir))


def _reproducibility(r: _Report) -> None:
    """The study, hashes, environment and the commands that rebuild it."""
    doc, study, repro = r.doc, r.s.study, r.repro
    doc.add(Heading(2, ["Reproducibility"]))
    env = repro["run_environment"]
    doc.add(
        Bullets(
            [
                ["Study: ", U(study.name), " (id ", U(study.study_id), ")."],
                [
                    "Results hash (sha256 of config, runs and metrics): ",
                    U(repro["results_sha256"]),
                    ".",
                ],
                [
                    "Device: ",
                    U(", ".join(map(str, env["device"])) or "unknown"),
                    "; precision: ",
                    U(", ".join(map(str, env["precision"])) or "unknown"),
                    "; torch threads: ",
                    U(", ".join(map(str, env["torch_threads"])) or "unknown"),
                    ".",
                ],
                ["Git commit: ", U(", ".join(map(str, env["git_commit"])) or "unknown"), "."],
                [
                    "Platform: ",
                    U(", ".join(map(str, env["platform"] + env["gpu"])) or "unknown"),
                    ".",
                ],
            ]
        )
    )
    doc.add(Para(["Rerun the study, then rebuild this report:"]))
    doc.add(
        Code(
            f"{repro['rerun']['study'] or '# the store records no command'}\n"
            f"{repro['rerun']['report']}\n",
            "sh",
        )
    )
    doc.add(Para(["Package versions and data/model fingerprints recorded by the runs:"]))
    doc.add(
        Code(
            yaml.safe_dump(
                {"versions": env["versions"], "fingerprints": env["fingerprints"]},
                sort_keys=True,
                default_flow_style=None,
                width=96,
            ),
            "yaml",
        )
    )
    doc.add(Para(["The validated study configuration:"]))
    doc.add(
        Code(
            yaml.safe_dump(
                study.config, sort_keys=True, default_flow_style=None, allow_unicode=True, width=96
            ),
            "yaml",
        )
    )
    doc.add(
        Para(
            [
                "Tables are also written as Markdown, LaTeX (booktabs) and CSV under tables/; "
                "figures as PNG (300 dpi) and PDF under figures/; manifest.json lists every "
                "file with its sha256."
            ]
        )
    )


# The report's sections in reading order; each adds its headings, text, tables and figures.
SECTIONS = (
    _preamble,
    _methods,
    _headline_task,
    _results,
    _tasks,
    _comparisons,
    _models,
    _budget,
    _statistics,
    _tradeoff,
    _guidelines,
    _importance,
    _probe,
    _consistency,
    _curves,
    _reproducibility,
)


def build_document(
    s: Summary,
    store_arg: str,
    repro: dict,
    fig_dir: Path,
    metric: str = "loss",
    fair: FairComparison | None = None,
    models: ModelComparison | None = None,
) -> tuple[Document, list[tb.Table]]:
    """The whole report as a document, and the tables to write as files.

    metric: the headline metric, "loss" or a stored task metric (its section comes first).
    fair: the study's selection, tasks and verdicts (``analysis.fair.compare``); ``s`` is
    then its first task's headline summary.
    models: a study across models (``analysis.models.compare_models``); ``fair`` and
    ``s`` are then its first model's.
    """
    doc = Document([U(s.study.name), ": where should the LoRA adapters go?"])
    report = _Report(s, repro, fig_dir, metric, fair, doc, models)
    for section in SECTIONS:
        section(report)
    return doc, report.tables
