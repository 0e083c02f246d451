"""The report's content: the sections in reading order, and the document they build.

Each section is a function of the ``SectionContext`` that adds its headings, prose, tables and
figures; the longer ones live in ``section_*`` modules. Sentences carry the numbers of the
tables (same rounding, from ``fmt``); user strings are ``U`` parts so that each renderer
escapes them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from loraplace.analysis import Summary, consistency
from loraplace.analysis.fair import FairComparison
from loraplace.analysis.models import ModelComparison
from loraplace.report import tables as tb
from loraplace.report.comparisons import add_comparison_sections
from loraplace.report.escape import U
from loraplace.report.methods import add_methods_section
from loraplace.report.render import Bullets, Code, Document, Heading, Para
from loraplace.report.section_accuracy import accuracy_pointer, add_accuracy_section
from loraplace.report.section_analysis import (
    add_consistency,
    add_curves,
    add_guidelines,
    add_importance,
    add_tradeoff,
)
from loraplace.report.section_budget_models import add_budget_models_section
from loraplace.report.section_budget_probe import add_budget_section, add_probe_section
from loraplace.report.section_context import SectionContext
from loraplace.report.section_models import add_models_section
from loraplace.report.section_predictors import add_predictors_section
from loraplace.report.section_results import add_results, add_statistics
from loraplace.report.section_task_metrics import add_task_section


def _preamble(r: SectionContext) -> None:
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
    if pointer := accuracy_pointer(r):
        doc.add(Para(pointer))
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


def _methods(r: SectionContext) -> None:
    """Model, data, placements, settings, hardware, statistics."""
    add_methods_section(r.doc, r.table, r.s, len(r.tests))


def _headline_task(r: SectionContext) -> None:
    """The chosen task metric leads when it is the headline."""
    if r.metric != "loss":
        add_task_section(r.doc, r.table, r.s, r.metric)


def _tasks(r: SectionContext) -> None:
    """Task metrics after the results when loss is the headline."""
    if r.metric == "loss":
        add_task_section(r.doc, r.table, r.s, r.metric)


def _comparisons(r: SectionContext) -> None:
    """Selection, tasks and verdicts of a fair comparison."""
    if r.fair is not None:
        add_comparison_sections(r.doc, r.table, r.figure, r.fair, r.fig_dir)


def _models(r: SectionContext) -> None:
    """Per-model results, the models' agreement and the cheap-proxy answer."""
    if r.models is not None:
        add_models_section(r.doc, r.table, r.models)


def _budget(r: SectionContext) -> None:
    """The equal-budget matching, when the study has a budget (each model's, across models)."""
    if r.models is not None:
        add_budget_models_section(r)
    else:
        add_budget_section(r.doc, r.table, r.s)


def _probe(r: SectionContext) -> None:
    """Probe scores set against trained single-role placements."""
    add_probe_section(r.doc, r.table, r.s)


def _predictors(r: SectionContext) -> None:
    """`loraplace validate`'s table, when its validation.json lies beside the store."""
    add_predictors_section(r.doc, r.table, r.s.study.store_path, r.s.study.name)


def _reproducibility(r: SectionContext) -> None:
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
    add_accuracy_section,
    _headline_task,
    add_results,
    _tasks,
    _comparisons,
    _models,
    _budget,
    add_statistics,
    add_tradeoff,
    add_guidelines,
    add_importance,
    _probe,
    _predictors,
    add_consistency,
    add_curves,
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
    report = SectionContext(s, repro, fig_dir, metric, fair, doc, models)
    for section in SECTIONS:
        section(report)
    return doc, report.tables
