"""The paper-shaped report: Methods from the store, report.tex + references.bib, PDFs.

The Methods numbers are checked against SQL on the store (not against the report's own
code); the LaTeX is compiled by a real TeX engine and its log read for errors and
undefined references; the PDF pages are rendered to images.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import running_in_ci
from report_fixtures import make_store

from loraplace.report import build_report
from loraplace.report.bib import WORKS, Cite, to_bibtex
from loraplace.report.latex import unicode_safe
from loraplace.report.method_placements import layer_ranges, resolutions
from loraplace.report.pdf import chromium, compile_tex, log_problems, print_html, tex_engine


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("paper")
    db = make_store(tmp / "study.db")
    build_report(db, tmp / "report")
    return db, tmp / "report"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_methods_placements_trace_to_the_store(report):
    db, out = report
    con = sqlite3.connect(db)
    rows = {r["placement"]: r for r in _csv(out / "tables" / "methods_placements.csv")}
    specs = {}
    for placement, spec_json in con.execute(
        "SELECT placement, spec_json FROM runs WHERE kind='lora' AND status='done'"
    ):
        specs.setdefault(placement, json.loads(spec_json))
    assert set(rows) == set(specs)
    for name, spec in specs.items():
        mods = spec["modules"]
        expected = sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in mods)
        assert int(rows[name]["shape_params"]) == expected
        assert int(rows[name]["modules"]) == len(mods)
        (measured,) = con.execute(
            "SELECT DISTINCT m.value FROM metrics m JOIN runs r USING (run_id) "
            "WHERE r.placement=? AND m.name='trainable_params' AND r.status='done'",
            (name,),
        ).fetchone()
        assert int(rows[name]["trainable_params"]) == int(measured)
    # GPT-2's c_proj is two roles: the seed's "attention" placement adapts mlp.c_proj too
    assert rows["c_attn+c_proj"]["resolutions"] == "c_proj → attn.o (4), mlp.down (4)"
    assert rows["c_fc"]["resolutions"] == ""
    assert rows["c_fc"]["coverage"] == "mlp.up × layers 0–3"
    assert rows["c_attn+c_proj"]["shape_params"] == "45056"  # 4 x 8 x (384+128+256+640)


def test_methods_settings_and_prose_trace_to_the_store(report):
    db, out = report
    con = sqlite3.connect(db)
    settings = {r["setting"]: r["value"] for r in _csv(out / "tables" / "methods_settings.csv")}

    def metric(name: str) -> set[float]:
        q = "SELECT DISTINCT value FROM metrics m JOIN runs r USING (run_id) "
        q += "WHERE r.kind='lora' AND r.status='done' AND m.name=?"
        return {v for (v,) in con.execute(q, (name,))}

    (steps,) = metric("steps")
    (train_tokens,) = metric("train_tokens")
    (eval_tokens,) = metric("eval_tokens")
    assert settings["Optimizer steps"] == f"{int(steps):,}"
    assert settings["Train tokens per run"] == f"{int(train_tokens):,}"
    assert settings["Eval tokens"] == f"{int(eval_tokens):,}"
    spec = json.loads(con.execute("SELECT spec_json FROM runs LIMIT 1").fetchone()[0])
    t = spec["train"]
    assert settings["Batch (sequences per step)"] == str(t["batch_size"])
    assert settings["Tokens per step"] == f"{t['batch_size'] * t['block_size']:,}"
    seeds = sorted({s for (s,) in con.execute("SELECT seed FROM runs WHERE status='done'")})
    assert settings["Seeds"] == ", ".join(map(str, seeds))
    md = (out / "report.md").read_text()
    methods = md[md.index("## Methods") : md.index("## Results")]
    assert f"Each run trains on {int(train_tokens):,} tokens" in methods
    assert f"evaluated on {int(eval_tokens):,} validation tokens" in methods
    (total,) = metric("total_params")
    assert f"({int(total):,} parameters; fingerprint 9e107d9d372bb682)" in methods
    assert "(Holm, 1979) at α = 0.05" in methods
    assert "No equivalence margin was set" in methods
    assert md.index("## Methods") < md.index("## Results") < md.index("## References")


def test_citations_match_the_bib_file(report):
    _, out = report
    tex = (out / "report.tex").read_text()
    bib = (out / "references.bib").read_text()
    cited = {k for group in re.findall(r"\\citep\{([^}]*)\}", tex) for k in group.split(",")}
    in_bib = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    assert cited == in_bib
    assert {"hu2022lora", "mangrulkar2022peft", "holm1979", "student1908"} <= cited
    md = (out / "report.md").read_text()
    refs = md[md.index("## References") :].splitlines()
    assert sum(1 for line in refs if line.startswith("- ")) == len(in_bib)
    assert "(Hu et al., 2022)" in md and "(Hu et al., 2022)" in (out / "report.html").read_text()


def test_latex_article_shape(report):
    _, out = report
    tex = (out / "report.tex").read_text()
    assert tex.isascii() or all(ord(c) < 256 or c in "–—‘’“”•" for c in tex)
    assert "ABSTRACT TO BE WRITTEN BY THE AUTHOR" in tex
    for needed in (r"\toprule", r"\midrule", r"\bottomrule", r"\bibliography{references}"):
        assert needed in tex
    order = [r"\bibliography{", r"\appendix", r"\section{Reproducibility}"]
    assert [tex.index(x) for x in order] == sorted(tex.index(x) for x in order)
    figures = re.findall(r"\\includegraphics\[[^]]*\]\{(figures/[^}]+)\}", tex)
    md_figs = re.findall(r"\(figures/([^)]+)\.png\)", (out / "report.md").read_text())
    assert [Path(f).stem for f in figures] == md_figs  # the same figures, in the same order
    assert all(f.endswith(".pdf") and (out / f).is_file() for f in figures)
    outside_verbatim = re.sub(r"\\begin\{verbatim\}.*?\\end\{verbatim\}", "", tex, flags=re.S)
    assert r"\textless{}script\textgreater{}" in tex and "<script>" not in outside_verbatim


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain", "plain"),
        ("α = 0.05", r"$\alpha$ = 0.05"),
        ("c_proj → attn.o", r"c_proj $\rightarrow$ attn.o"),
        ("90 % — ok", "90 % — ok"),
        ("漢", "?"),
    ],
)
def test_unicode_safe(text, expected):
    assert unicode_safe(text) == expected


def test_layer_ranges_and_resolutions():
    assert layer_ranges([5, 0, 1, 2, 7, 8]) == "0–2, 5, 7–8"
    assert layer_ranges([3]) == "3"
    mods = [
        {"name": "h.0.attn.c_proj", "role": "attn.o"},
        {"name": "h.0.mlp.c_proj", "role": "mlp.down"},
        {"name": "h.1.mlp.c_proj", "role": "mlp.down"},
        {"name": "h.0.mlp.c_fc", "role": "mlp.up"},
    ]
    assert resolutions(mods) == ["c_proj → attn.o (1), mlp.down (2)"]


def test_cite_and_bibtex():
    c = Cite("hu2022lora", "holm1979")
    assert c == "(Hu et al., 2022; Holm, 1979)" and c.keys == ("hu2022lora", "holm1979")
    with pytest.raises(KeyError):
        Cite("nobody2099")
    bib = to_bibtex(list(WORKS))
    assert bib.count("\n@") + 1 == len(WORKS) and "author = {Holm, Sture}" in bib


def test_log_problems_finds_errors_and_undefined_references():
    log = (
        "LaTeX Warning: Citation `hu2022lora' on page 1 undefined on input line 40.\n"
        "! Undefined control sequence.\n"
        "ok line\n"
        "LaTeX Warning: There were undefined references.\n"
    )
    assert len(log_problems(log)) == 3
    assert log_problems("Output written on report.pdf (9 pages).") == []


@pytest.mark.slow
@pytest.mark.needs_tool("TeX", tex_engine() is not None, "apt-get install latexmk")
def test_report_tex_compiles_without_errors_or_undefined_references(report, tmp_path):
    _, out = report
    work = tmp_path / "r"
    shutil.copytree(out, work)
    res = compile_tex(work)
    assert res.problems == []
    pdf = work / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [p.name for p in out.iterdir()] + ["report.pdf"]
    )  # TeX's aux and log files stay in its scratch directory
    if shutil.which("pdftoppm") or running_in_ci():  # poppler-utils: .ci/run installs it
        subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(tmp_path / "p")], check=True)
        pages = sorted(tmp_path.glob("p-*.png"))
        assert len(pages) >= 5
        assert all(p.stat().st_size > 1000 for p in pages)


@pytest.mark.slow
@pytest.mark.needs_tool("chromium", chromium() is not None, "apt-get install chromium")
def test_html_prints_to_pdf_with_chromium(report, tmp_path):
    _, out = report
    pdf = print_html(out, tmp_path / "report-html.pdf").path
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 50_000


def _record(spec: dict, metrics: dict, manifest: dict):
    """One trained run as the report reads it."""
    from loraplace.analysis import RunRecord

    return RunRecord(
        run_id="r",
        placement="p",
        kind="lora",
        seed=0,
        status="done",
        diverged_step=None,
        error=None,
        spec=spec,
        metrics=metrics,
        manifest=manifest,
    )


def test_data_paragraph_reports_format_and_loss_mask():
    from types import SimpleNamespace

    from loraplace.report.methods import _data_para

    man = {
        "data_info": {
            "format": "prompt-completion",
            "loss_on": "completion",
            "split": "example",
            "scored_tokens": 1234,
        }
    }
    run = _record(
        spec={"train": {"block_size": 64, "split_seed": 0}, "fingerprints": {"data": "ab" * 32}},
        metrics={"train_tokens": 6400.0, "eval_tokens": 640.0},
        manifest=man,
    )
    s = SimpleNamespace(study=SimpleNamespace(config={"dataset": "qa.jsonl"}))
    text = "".join(_data_para(s, [run]).text)  # type: ignore[arg-type]
    assert "qa.jsonl (format prompt-completion; fingerprint abababababababab," in text
    assert "Each run trains on 6,400 tokens and is evaluated on 640 validation tokens" in text
    assert (
        "Loss mask: the loss scores completion tokens (1,234 scored tokens over all the "
        "dataset's examples, train and held out); examples are split by example." in text
    )
    # Instruction data is one example per row: never "packed into blocks".
    assert "packed into blocks" not in text
    assert "into one row of at most 64 tokens, never packed with another example" in text
    assert "no loss mask" not in text


def test_methods_give_counted_tokens_and_mark_an_old_store_nominal():
    """Runs that counted their tokens state them; a store before the counts says nominal."""
    from types import SimpleNamespace

    from loraplace.report.methods import _data_para, settings_rows

    def run(metrics: dict):
        return _record(
            spec={"train": {"block_size": 64, "batch_size": 8, "split_seed": 0}},
            metrics={"eval_tokens": 640.0, "steps": 10.0, **metrics},
            manifest={"data_info": {"format": "prompt-completion"}, "batching": "grouped"},
        )

    s = SimpleNamespace(study=SimpleNamespace(config={"dataset": "qa.jsonl"}))
    new = run({"train_tokens": 2345.0, "train_scored_tokens": 456.0})
    text = "".join(_data_para(s, [new]).text)  # type: ignore[arg-type]
    assert (
        "Each run trains on 2,345 tokens (non-padding, as fed to the model; 456 of them "
        "scored by the loss) and is evaluated on 640 validation tokens." in text
    )
    assert " Batches: grouped." in text
    rows = dict(settings_rows([new]))
    assert rows["Train tokens per run"] == "2,345"
    assert rows["Scored train tokens per run"] == "456"
    assert rows["Tokens per step"] == "234"  # 2,345 / 10 steps, not 8 x 64
    old = run({"train_tokens": 5120.0})
    text = "".join(_data_para(s, [old]).text)  # type: ignore[arg-type]
    assert "(the train count is nominal, steps x batch x block" in text
    rows = dict(settings_rows([old]))
    assert rows["Tokens per step"] == "512" and "Scored train tokens per run" not in rows
