"""``loraplace package`` and ``loraplace verify``: a study's archive, and a reader's check."""

from __future__ import annotations

from pathlib import Path

import typer

from loraplace.cli.app import app


@app.command()
def package(
    store: Path = typer.Argument(
        Path("."), help="The study's output directory or its loraplace.db file."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Archive path (default: ./<study>-package.tar.gz)."
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study name or id in the store (default: the most recent)."
    ),
) -> int:
    """Write one tar.gz: study file, specs, store, report, environment lock, fingerprints."""
    from loraplace.package import make_package

    res = make_package(store, out, study=study)
    typer.echo(
        f"package of study {res.study!r}: {res.path} ({res.files} files, "
        f"{res.bytes / 2**20:.1f} MiB; {res.scrubbed} stored value(s) had absolute paths "
        "rewritten)"
    )
    return 0


@app.command()
def verify(
    archive: Path = typer.Argument(..., help="A package written by `loraplace package`."),
    runs: int = typer.Option(2, "--runs", min=0, help="Runs to re-train and compare (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample of runs to re-train."),
) -> int:
    """Check a package: file hashes, stored numbers, report rebuild, re-trained runs."""
    from loraplace.package import verify_package

    findings = verify_package(archive, runs, seed, on_finding=lambda f: typer.echo(f.line()))
    failed = [f for f in findings if not f.ok]
    typer.echo(
        f"{'FAILED' if failed else 'verified'}: {len(findings) - len(failed)} ok, "
        f"{len(failed)} failed"
    )
    return 1 if failed else 0
