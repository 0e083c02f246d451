"""The results store: one SQLite file per study output directory.

WAL mode, one writer (the driver). Each finished run is written in a single transaction,
so a crash at any moment loses at most the run in flight; a run left ``running`` by a
dead driver reads as ``interrupted`` the next time the store is opened for writing.
Readers (analysis, report, status) need nothing but this file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loraplace.errors import UserError
from loraplace.runs import RunResult, RunSpec

SCHEMA_VERSION = 1
FINISHED = ("done", "diverged")  # a re-run skips these; everything else is redone

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY,      -- hash of the validated study config
    name TEXT NOT NULL,
    config_json TEXT NOT NULL,      -- the validated study, as JSON
    command TEXT,                   -- the command line that ran it
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,        -- hash of the resolved spec (RunSpec.run_id)
    placement TEXT NOT NULL,
    kind TEXT NOT NULL,             -- lora | zero-shot | full
    seed INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL,           -- pending | running | done | failed | diverged | interrupted
    diverged_step INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS study_runs (
    study_id TEXT NOT NULL REFERENCES studies(study_id),
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    position INTEGER NOT NULL,      -- order of the run within the study
    PRIMARY KEY (study_id, run_id)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,             -- train_loss | eval_loss | lr | ...
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, name, step)
);
CREATE TABLE IF NOT EXISTS manifests (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    manifest_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS probes (
    study_id TEXT PRIMARY KEY REFERENCES studies(study_id),
    probe_json TEXT NOT NULL        -- importance scores before training (ProbeResult)
);
"""

STORE_NAME = "loraplace.db"


def resolve_store_path(path: str | Path) -> Path:
    """Accept a ``.db`` file or an output directory holding ``loraplace.db``.

    A path that does not exist yet is a directory unless it ends in ``.db``.
    """
    p = Path(path)
    if p.is_dir() or (not p.exists() and p.suffix != ".db"):
        p = p / STORE_NAME
    return p


class Store:
    """Read/write access to one results store."""

    def __init__(self, path: str | Path, *, create: bool = True, writer: bool = True):
        self.path = resolve_store_path(path)
        if not self.path.exists() and not create:
            raise UserError(
                f"no results store at {self.path}: give the study's output directory "
                "or its .db file (run `loraplace run` first)"
            )
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint
            self.conn.execute("PRAGMA foreign_keys=ON")
            if writer:
                self.conn.executescript(_SCHEMA)
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                # A run left 'running' belongs to a driver that died (kill -9, power loss).
                self.conn.execute(
                    "UPDATE runs SET status='interrupted', error='driver stopped mid-run' "
                    "WHERE status='running'"
                )
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not a loraplace results store ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- writing (driver)
    def add_study(self, study_id: str, name: str, config: dict[str, Any], command: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO studies VALUES (?, ?, ?, ?, ?)",
            (study_id, name, json.dumps(config, sort_keys=True, default=str), command, time.time()),
        )

    def save_probe(self, study_id: str, probe: dict[str, Any]) -> None:
        """The study's importance probe (deterministic: a re-run writes the same scores)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO probes VALUES (?, ?)",
            (study_id, json.dumps(probe, sort_keys=True)),
        )

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def add_runs(self, study_id: str, specs: Iterable[RunSpec]) -> None:
        """Register specs as pending (existing runs keep their status) and link them."""
        with self._tx():
            for pos, spec in enumerate(specs):
                self.conn.execute(
                    "INSERT OR IGNORE INTO runs (run_id, placement, kind, seed, spec_json,"
                    " status, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                    (
                        spec.run_id,
                        spec.placement_name,
                        spec.kind,
                        spec.seed,
                        json.dumps(spec.to_dict(), sort_keys=True, default=str),
                        time.time(),
                    ),
                )
                self.conn.execute(
                    "INSERT OR REPLACE INTO study_runs VALUES (?, ?, ?)",
                    (study_id, spec.run_id, pos),
                )

    def mark_running(self, run_id: str) -> None:
        self.conn.execute(
            "UPDATE runs SET status='running', started_at=?, error=NULL WHERE run_id=?",
            (time.time(), run_id),
        )

    def mark(self, run_id: str, status: str, error: str | None = None) -> None:
        self.conn.execute(
            "UPDATE runs SET status=?, error=?, finished_at=? WHERE run_id=?",
            (status, error, time.time(), run_id),
        )

    def save_result(self, result: RunResult) -> None:
        """Write a run's status, metrics, curves and manifest in one transaction."""
        rid = result.run_id
        with self._tx():
            for table in ("metrics", "curves", "manifests"):
                self.conn.execute(f"DELETE FROM {table} WHERE run_id=?", (rid,))
            self.conn.execute(
                "UPDATE runs SET status=?, diverged_step=?, error=?, finished_at=? WHERE run_id=?",
                (result.status, result.diverged_step, result.error, time.time(), rid),
            )
            if result.status != "diverged":  # a diverged run never contributes numbers
                self.conn.executemany(
                    "INSERT INTO metrics VALUES (?, ?, ?)",
                    [(rid, k, float(v)) for k, v in result.metrics.items() if v is not None],
                )
            self.conn.executemany(
                "INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?)",
                [
                    (rid, name, int(step), float(value))
                    for name, points in result.curves.items()
                    for step, value in points
                ],
            )
            self.conn.execute(
                "INSERT INTO manifests VALUES (?, ?)",
                (rid, json.dumps(result.manifest, sort_keys=True, default=str)),
            )

    def _tx(self):
        conn = self.conn

        class _Tx:
            def __enter__(self):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *_):
                conn.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # ---------------------------------------------------------------- reading
    def studies(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM studies ORDER BY created_at").fetchall()
        return [dict(r) for r in rows]

    def study(self, study_id: str | None = None) -> dict[str, Any]:
        """One study by id; the most recent when no id is given."""
        studies = self.studies()
        if not studies:
            raise UserError(f"{self.path} holds no studies: run `loraplace run` first")
        if study_id is None:
            return studies[-1]
        for s in studies:
            if s["study_id"] == study_id or s["name"] == study_id:
                return s
        names = ", ".join(s["name"] for s in studies)
        raise UserError(f"no study {study_id!r} in {self.path}; it holds: {names}")

    def runs(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """Runs with their spec parsed, in study order when a study is given."""
        if study_id is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at").fetchall()
        else:
            rows = self.conn.execute(
                "SELECT r.* FROM runs r JOIN study_runs s ON r.run_id = s.run_id "
                "WHERE s.study_id=? ORDER BY s.position",
                (study_id,),
            ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["spec"] = json.loads(d.pop("spec_json"))
            out.append(d)
        return out

    def run_specs(self, study_id: str, statuses: Iterable[str] | None = None) -> list[RunSpec]:
        runs = self.runs(study_id)
        if statuses is not None:
            keep = set(statuses)
            runs = [r for r in runs if r["status"] in keep]
        return [RunSpec.from_dict(r["spec"]) for r in runs]

    def metrics(self, run_ids: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        """run_id -> {metric name: value}."""
        rows = self.conn.execute("SELECT run_id, name, value FROM metrics").fetchall()
        want = set(run_ids) if run_ids is not None else None
        out: dict[str, dict[str, float]] = {}
        for r in rows:
            if want is None or r["run_id"] in want:
                out.setdefault(r["run_id"], {})[r["name"]] = r["value"]
        return out

    def curves(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        rows = self.conn.execute(
            "SELECT name, step, value FROM curves WHERE run_id=? ORDER BY name, step", (run_id,)
        ).fetchall()
        out: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            out.setdefault(r["name"], []).append((r["step"], r["value"]))
        return out

    def manifest(self, run_id: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT manifest_json FROM manifests WHERE run_id=?", (run_id,)
        ).fetchone()
        return json.loads(row[0]) if row else {}

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def probe(self, study_id: str) -> dict[str, Any] | None:
        """The study's stored probe, or None (also for stores written before probes)."""
        try:
            row = self.conn.execute(
                "SELECT probe_json FROM probes WHERE study_id=?", (study_id,)
            ).fetchone()
        except sqlite3.OperationalError:  # no probes table: a store from before probes
            return None
        return json.loads(row[0]) if row else None

    def status_counts(self, study_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT r.status, COUNT(*) AS n FROM runs r JOIN study_runs s ON r.run_id=s.run_id "
            "WHERE s.study_id=? GROUP BY r.status",
            (study_id,),
        ).fetchall()
        return {r["status"]: r["n"] for r in rows}
