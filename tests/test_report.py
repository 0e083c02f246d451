"""`loraplace report`: files, every number in report.md against the store, escaping, atomicity."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import struct
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import SCRIPT, make_store
from scipy import stats

from loraplace.cli import run_cli
from loraplace.errors import UserError
from loraplace.report import build_report

NUM = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    db = make_store(root / "loraplace.db")
    t0 = time.perf_counter()
    assert run_cli(["report", str(root)]) == 0
    elapsed = time.perf_counter() - t0
    return db, root / "report", elapsed


# ------------------------------------------------------------------ independent recomputation
def _store_numbers(db: Path) -> dict:
    """Per placement: seed -> metrics of done runs, read with plain SQL."""
    con = sqlite3.connect(db)
    out: dict[str, dict[int, dict[str, float]]] = {}
    for placement, seed, name, value in con.execute(
        "SELECT r.placement, r.seed, m.name, m.value FROM runs r JOIN metrics m "
        "ON r.run_id = m.run_id WHERE r.status = 'done'"
    ):
        out.setdefault(placement, {}).setdefault(seed, {})[name] = value
    con.close()
    return out


def _mean_ci(vals: list[float]) -> tuple[float, float | None]:
    n = len(vals)
    if n < 2:
        return float(np.mean(vals)), None
    return float(np.mean(vals)), stats.t.ppf(0.975, n - 1) * np.std(vals, ddof=1) / math.sqrt(n)


def _pm(vals, f="{:.4f}", scale=1.0) -> str:
    m, ci = _mean_ci([v * scale for v in vals])
    return f.format(m) if ci is None else f"{f.format(m)} ± {f.format(ci)}"


def _md_table(md: str, number: int) -> list[dict[str, str]]:
    """Rows of 'Table N' in report.md as header -> unescaped cell text."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"**Table {number}.**"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [re.sub(r"\\(.)", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", ln)[1:-1]]
        rows.append(cells)
    header, body = rows[0], rows[2:]
    return [dict(zip(header, r, strict=True)) for r in body]


def _table_numbers(md: str, title: str) -> int:
    m = re.search(r"\*\*Table (\d+)\.\*\* " + re.escape(title), md)
    assert m, title
    return int(m.group(1))


# ------------------------------------------------------------------ tests
def test_files_written(built):
    _, out, elapsed = built
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for stem in (
        "loss_params_time",
        "tradeoff",
        "learning_curves",
        "importance_heatmap",
    ):
        assert {f"figures/{stem}.png", f"figures/{stem}.pdf"} <= names
    for t in (
        "results",
        "coverage",
        "excluded",
        "stats",
        "efficiency",
        "guidelines",
        "importance",
        "consistency",
    ):
        assert {f"tables/{t}.md", f"tables/{t}.tex", f"tables/{t}.csv"} <= names
    assert {"report.md", "report.html", "manifest.json"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert listed == names - {"manifest.json"}
    assert not list(out.parent.glob(".report-*"))  # no temporary directory left behind
    assert elapsed < 30, f"report took {elapsed:.1f} s"


def test_pngs_are_300_dpi(built):
    _, out, _ = built
    for png in (out / "figures").glob("*.png"):
        data = png.read_bytes()
        i = data.index(b"pHYs")
        ppm_x, ppm_y, unit = struct.unpack(">IIB", data[i + 4 : i + 13])
        assert unit == 1 and round(ppm_x * 0.0254) == 300 and ppm_x == ppm_y, png.name


def test_results_table_equals_store(built):
    db, out, _ = built
    md = (out / "report.md").read_text()
    rows = {r["Placement"]: r for r in _md_table(md, _table_numbers(md, "Results per placement"))}
    data = _store_numbers(db)
    trained = {p: s for p, s in data.items() if p != "zero-shot"}
    assert set(rows) == set(trained) | {"zero-shot", "floor"}
    ref = max(trained, key=lambda p: next(iter(trained[p].values()))["trainable_params"])
    ref_loss = np.mean([m["eval_loss"] for m in trained[ref].values()])
    ref_time = np.mean([m["train_time_s"] for m in trained[ref].values()])
    zs = [m["eval_loss"] for m in data["zero-shot"].values()]
    for p, seeds in trained.items():
        runs = [seeds[s] for s in sorted(seeds)]

        def col(k: str, runs=runs) -> list[float]:
            return [r[k] for r in runs]

        row = rows[p]
        loss = np.mean(col("eval_loss"))
        n = len(runs)
        assert row["Seeds"] == (f"{n} (<3)" if n < 3 else str(n))
        assert row["Eval loss (nats)"] == _pm(col("eval_loss"))
        assert row["PPL"] == f"{math.exp(loss):.2f}"
        tp, total = runs[0]["trainable_params"], runs[0]["total_params"]
        assert row["Trainable params"] == f"{round(tp):,}"
        assert row["% of total"] == f"{100 * tp / (total + tp):.2f}"
        assert row["Fewer params than full FT"] == f"{total / tp:.2f}×"
        rel = f"{100 * (loss - ref_loss) / ref_loss:+.2f}"
        assert row["Δ loss vs ref (%)"] == (rel + " (ref)" if p == ref else rel)
        assert row["Train time (s)"] == _pm(col("train_time_s"), "{:.1f}")
        assert row["Speed-up vs ref"] == f"{ref_time / np.mean(col('train_time_s')):.2f}×"
        assert row["Tokens/s"] == f"{np.mean(col('tokens_per_s')):,.0f}"
        assert row["RSS growth (MiB)"] == f"{np.mean(col('peak_mem_bytes')) / 2**20:,.1f}"
        gap = [
            (r["zero_shot_loss"] - r["eval_loss"]) / (r["zero_shot_loss"] - r["floor"])
            for r in runs
        ]
        assert row["Gap closed (%)"] == _pm(gap, "{:.2f}", 100.0)
        forget = [r["retain_loss"] - r["retain_zero_shot_loss"] for r in runs]
        assert row["Forgetting (nats)"] == f"{np.mean(forget):+.4f}"
    assert len(zs) == 1 and rows["zero-shot"]["Seeds"] == "n/a (evaluation)"
    assert rows["zero-shot"]["Eval loss (nats)"] == f"{zs[0]:.4f}"
    assert rows["zero-shot"]["PPL"] == f"{math.exp(np.mean(zs)):.2f}"
    floor = next(iter(data["zero-shot"].values()))["floor"]
    assert rows["floor"]["Eval loss (nats)"] == f"{floor:.4f}"
    assert rows["floor"]["Gap closed (%)"] == "100.00"
    # and the CSV carries the unrounded values
    import pandas as pd

    csv = pd.read_csv(out / "tables" / "results.csv").set_index("placement")
    assert csv.loc["c_fc", "eval_loss_mean"] == pytest.approx(
        np.mean([m["eval_loss"] for m in trained["c_fc"].values()]), rel=1e-12
    )
    assert csv.loc["c_fc", "peak_mem_measure"] == "rss_growth_bytes"  # what the column holds


def test_stats_consistency_efficiency_tables_equal_store(built):
    db, out, _ = built
    md = (out / "report.md").read_text()
    data = {p: {s: m for s, m in v.items()} for p, v in _store_numbers(db).items()}
    order = ["c_attn+c_proj+c_fc", "c_attn+c_proj", "c_fc", SCRIPT]
    pairs = list(combinations(order, 2))
    ps = []
    for a, b in pairs:
        seeds = sorted(set(data[a]) & set(data[b]))
        ps.append(
            stats.ttest_rel(
                [data[a][s]["eval_loss"] for s in seeds], [data[b][s]["eval_loss"] for s in seeds]
            ).pvalue
        )
    # Holm by hand
    m, idx = len(ps), sorted(range(len(ps)), key=lambda i: ps[i])
    adj, run = [0.0] * m, 0.0
    for k, i in enumerate(idx):
        run = max(run, min(1.0, (m - k) * ps[i]))
        adj[i] = run
    fmt_p = lambda p: "<0.0001" if p < 1e-4 else f"{p:.4f}"  # noqa: E731
    rows = _md_table(md, _table_numbers(md, "Paired t-tests"))
    assert [(r["A"], r["B"]) for r in rows] == pairs
    for r, p, pa, (a, b) in zip(rows, ps, adj, pairs, strict=True):
        assert r["p"] == fmt_p(p) and r["p (Holm)"] == fmt_p(pa)
        seeds = sorted(set(data[a]) & set(data[b]))
        d = [data[a][s]["eval_loss"] - data[b][s]["eval_loss"] for s in seeds]
        mean, ci = _mean_ci(d)
        assert r["Loss A − B (nats)"] == f"{mean:+.4f} ± {ci:.4f}"
        assert r["Verdict"] == ("within noise" if pa >= 0.05 else f"{a if mean < 0 else b} better")
    rows = _md_table(md, _table_numbers(md, "Perplexity recomputed"))
    for r in rows:
        runs = data[r["Placement"]].values()
        loss = np.mean([x["eval_loss"] for x in runs])
        batch = np.mean([x["mean_batch_ppl"] for x in runs])
        assert r["Token-weighted loss (nats)"] == f"{loss:.4f}"
        assert r["PPL = exp(loss)"] == f"{math.exp(loss):.2f}"
        assert r["Mean of batch PPLs"] == f"{batch:.2f}"
        assert r["Inflation (%)"] == f"{100 * (batch / math.exp(loss) - 1):+.2f}"
    rows = _md_table(md, _table_numbers(md, "Efficiency"))
    for r in rows:
        runs = list(data[r["Placement"]].values())
        red = np.mean([x["zero_shot_loss"] - x["eval_loss"] for x in runs])
        assert r["Reduction per M params"] == f"{red / (runs[0]['trainable_params'] / 1e6):.4g}"
        assert (
            r["Reduction per train s"] == f"{red / np.mean([x['train_time_s'] for x in runs]):.4g}"
        )


def test_forgetting_and_efficiency_sentences_name_the_placements_the_store_says(built):
    """The extremes of forgetting, and the most reduction per M params and per second."""
    db, out, _ = built
    md = re.sub(r"\\(.)", r"\1", (out / "report.md").read_text())
    data = {p: list(v.values()) for p, v in _store_numbers(db).items() if p != "zero-shot"}

    def mean(p: str, f) -> float:
        return float(np.mean([f(r) for r in data[p]]))

    forget = {p: mean(p, lambda r: r["retain_loss"] - r["retain_zero_shot_loss"]) for p in data}
    lo, hi = min(forget, key=forget.__getitem__), max(forget, key=forget.__getitem__)
    assert lo != hi
    assert f"ranges from {forget[lo]:+.4f} nats ({lo}) to {forget[hi]:+.4f} nats ({hi})." in md
    red = {p: mean(p, lambda r: r["zero_shot_loss"] - r["eval_loss"]) for p in data}
    per_m = {p: red[p] / (data[p][0]["trainable_params"] / 1e6) for p in data}
    per_s = {p: red[p] / mean(p, lambda r: r["train_time_s"]) for p in data}
    best_m, best_s = max(per_m, key=per_m.__getitem__), max(per_s, key=per_s.__getitem__)
    assert f"Most loss reduction per million trainable parameters: {best_m} (" in md
    assert f"Most per training second: {best_s} (" in md


def test_every_number_in_the_prose_is_in_a_table(built):
    """Sentences and captions only repeat numbers the (checked) tables hold, or small counts."""
    _, out, _ = built
    md = (out / "report.md").read_text()
    md = md.split("## Reproducibility")[0]
    md = re.sub(r"```.*?```", "", md, flags=re.S)
    md = re.sub(r"\([^()]*?, \d{4}(?:; [^()]*?, \d{4})*\)", "", md)  # citations' years
    table_nums, prose_nums = set(), []
    for ln in md.splitlines():
        nums = [n.lstrip("+-") for n in NUM.findall(re.sub(r"\\(.)", r"\1", ln))]
        (table_nums.update if ln.startswith("|") else prose_nums.extend)(nums)
    allowed = table_nums | {"0.05", "95", "300"}
    stray = [n for n in prose_nums if n not in allowed and not (n.isdigit() and int(n) <= 100)]
    assert stray == [], stray
    assert "4.1000" in prose_nums and "2.9500" in prose_nums  # zero-shot and floor in the text


def test_user_strings_escaped_in_markdown_and_latex(built):
    _, out, _ = built
    md = (out / "report.md").read_text()
    outside_code = re.sub(r"```.*?```", "", md, flags=re.S)
    assert "<script>" not in outside_code
    assert r"\<script\>alert(1)\</script\>" in outside_code
    assert r"c\_attn+c\_proj+c\_fc" in outside_code
    tex = (out / "tables" / "results.tex").read_text()
    assert r"\textless{}script\textgreater{}" in tex and r"\toprule" in tex
    assert r"c\_attn+c\_proj" in tex and "n/a (evaluation) & 4.1000 &" in tex


def test_manifest_has_config_hash_versions_and_rerun(built):
    db, out, _ = built
    repro = json.loads((out / "manifest.json").read_text())["reproducibility"]
    assert repro["config"]["name"] == "tiny-seed-study"
    assert repro["command"] == "loraplace run tiny-seed-study.yaml --out runs/tiny-seed-study"
    assert repro["run_environment"]["versions"]["torch"] == ["2.13.0"]
    assert repro["run_environment"]["fingerprints"]["data"] == ["d41d8cd98f00b204"]
    assert len(repro["results_sha256"]) == 64
    md = (out / "report.md").read_text()
    assert repro["results_sha256"] in md and "loraplace report" in md


def test_rebuild_is_atomic_and_refuses_foreign_dirs(built, monkeypatch, tmp_path):
    db, out, _ = built
    before = (out / "report.md").read_text()
    import loraplace.report.figures as figures

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "curves_figure", boom)  # fails after three figures
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(db, out)
    assert (out / "report.md").read_text() == before  # the old report is intact
    assert not list(out.parent.glob(".report-*"))
    monkeypatch.undo()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a loraplace report"):
        build_report(db, foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "{tmp}/nowhere"], "no results store"),
        (["report", "{db}", "--study", "nope"], "no study 'nope'"),
        (["report", "{db}", "--reference", "c_fcc"], 'did you mean "c_fc"'),
    ],
)
def test_cli_user_errors(built, tmp_path, capsys, args, message):
    db, _, _ = built
    argv = [a.format(tmp=tmp_path, db=db) for a in args] + ["--out", str(tmp_path / "r")]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_minimal_store_omits_missing_columns(tmp_path):
    """Only eval_loss and params: no floor, forgetting, time columns; one seed warns.

    The first placement's name is full of Markdown, mathtext and table syntax.
    """
    odd = "a|b $x$ *bold* [l](u) `c` \\ _u_\nnext"
    db = make_store(
        tmp_path / "min.db",
        {odd: [("attn.qkv", [0, 1, 2, 3])], "b": [("mlp.up", [0, 1])]},
        seeds=(0,),
        zero_shot=False,
        diverged=None,
        forgetting=False,
    )
    con = sqlite3.connect(db)
    con.execute("DELETE FROM metrics WHERE name NOT IN ('eval_loss', 'trainable_params')")
    con.execute("DELETE FROM curves")
    con.commit()
    con.close()
    res = build_report(db, tmp_path / "out", reference="b")
    md = (res.out / "report.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| Placement | Kind"))
    for missing in ("Gap closed", "Forgetting", "Train time", "Tokens/s", "RSS growth", "zero"):
        assert missing not in header
    assert "**Warning:** fewer than 3 finished seeds" in md
    assert "untestable (fewer than 2 shared seeds)" in md
    assert "learning_curves" not in md  # no curves, no figure
    assert "+0.00 (ref)" in md
    rows = {r["Placement"]: r for r in _md_table(md, _table_numbers(md, "Results per placement"))}
    assert set(rows) == {" ".join(odd.split()), "b"}  # the name survives, on one line
    assert "\\*bold\\*" in md and "\\$x\\$" in md and "a\\|b" in md


def test_study_without_finished_runs_is_a_user_error(tmp_path):
    db = make_store(
        tmp_path / "x.db",
        {"a": [("attn.qkv", [0])]},
        seeds=(0,),
        zero_shot=False,
        diverged=("a", 0),
    )
    with pytest.raises(UserError, match="no finished trained runs"):
        build_report(db, tmp_path / "out")


def test_full_finetuning_is_the_default_reference_and_study_selection(tmp_path):
    db = tmp_path / "loraplace.db"
    make_store(db, seeds=(0, 1, 2), full=True, diverged=None)
    make_store(db, {"other": [("mlp.up", [0, 1, 2, 3])]}, seeds=(0,), name="later-study")
    from loraplace.analysis import read_study_data

    assert read_study_data(db).name == "later-study"  # the most recent study by default
    res = build_report(db, tmp_path / "seed", study="tiny-seed-study")
    md = (res.out / "report.md").read_text()
    rows = {r["Placement"]: r for r in _md_table(md, _table_numbers(md, "Results per placement"))}
    assert rows["full-ft"]["Kind"] == "full"
    assert rows["full-ft"]["Δ loss vs ref (%)"] == "+0.00 (ref)"  # most trainable params
    assert rows["full-ft"]["Fewer params than full FT"] == "1.00×"
    assert rows["full-ft"]["Trainable params"] == "870,016"
    cov = {
        r["Placement"]: r for r in _md_table(md, _table_numbers(md, "What each placement adapts"))
    }
    assert cov["full-ft"]["Roles [layers]"] == "—" and cov["full-ft"]["Modules"] == "0"
