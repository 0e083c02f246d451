"""The results store: one SQLite file per study output directory.

WAL mode, one writer (the driver). Each finished run is written in a single transaction,
so a crash at any moment loses at most the run in flight; a run left ``running`` by a
dead driver reads as ``interrupted`` the next time the store is opened for writing.
Readers (analysis, report, status) need nothing but this file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loraplace.errors import UserError
from loraplace.lock import WriterLock, busy_error, live_holder, writer_alive
from loraplace.runs import RunResult, RunSpec

SCHEMA_VERSION = 1
FINISHED = ("done", "diverged", "flagged")  # a re-run skips these; the rest is redone

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
    status TEXT NOT NULL,           -- runs.RunStatus: pending running done failed diverged
                                    -- flagged interrupted paused pruned
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


_SQLITE_MAGIC = b"SQLite format 3\x00"
_OURS = {"meta", "studies", "runs"}  # tables every loraplace store has had


def check_store_file(path: Path, identify: bool = True) -> None:
    """Refuse, in one line, a file that is not a results store this code reads.

    identify: also open it read-only and check its tables and schema version (a writer
    does, before it takes the lock; a reader checks them on its own connection).
    """
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a results store: give its parent directory")
    if path.stat().st_size == 0:
        raise UserError(
            f"{path} is an empty file (0 bytes), not a loraplace results store: "
            "delete it, or choose another --out"
        )
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise UserError(
            f"{path} is not a SQLite database, so not a loraplace results store: "
            "give a study's output directory, or choose another --out"
        )
    if not identify:
        return
    conn = _connect(path, writer=False)
    try:
        check_store_schema(conn, path, writer=True)
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from None
    finally:
        conn.close()


def damaged(path: Path, exc: Exception) -> UserError:
    return UserError(
        f"{path} is damaged (SQLite: {' '.join(str(exc).split())}): restore it from a copy, "
        "or run the study again with another --out"
    )


def check_store_schema(conn: sqlite3.Connection, path: Path, writer: bool) -> bool:
    """Check the open database is a loraplace store this code reads; True when it is empty.

    A foreign database is refused before a table is created in it, and so is a store of
    a newer schema; a damaged one raises sqlite3.DatabaseError (quick_check or the query).
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        if writer:
            return True
        raise UserError(f"{path} is an empty SQLite database: run `loraplace run` first")
    if not _OURS <= tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise UserError(
            f"{path} is a SQLite database of something else (tables: {shown}), not a "
            "loraplace results store: give a study's output directory, or another --out"
        )
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row and str(row[0]).isdigit() else None
    if version is None or version > SCHEMA_VERSION:
        raise UserError(
            f"{path} is a loraplace store of schema {row[0] if row else 'unknown'}, newer than "
            f"this loraplace reads ({SCHEMA_VERSION}): upgrade loraplace to read it"
        )
    check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if check != "ok":
        raise sqlite3.DatabaseError(check)
    return False


def _connect(path: Path, writer: bool) -> sqlite3.Connection:
    """A writer's connection, or a read-only one that leaves no file behind."""
    if writer:
        return sqlite3.connect(path, timeout=30.0, isolation_level=None)
    uri = path.resolve().as_uri()
    # mode=ro would leave -wal/-shm files beside a store nobody writes; immutable reads
    # the file alone, which is whole when no writer is live and no WAL is left over.
    live = writer_alive(path) or path.with_name(path.name + "-wal").exists()
    try:
        conn = sqlite3.connect(f"{uri}?{'mode=ro' if live else 'immutable=1'}", uri=True)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return conn
    except sqlite3.OperationalError:
        if not live:
            raise
        # Read-only media cannot hold the WAL index: read the database file as it is.
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)


def _writable_dir(directory: Path, create: bool) -> None:
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        marker = directory / f".loraplace-write-{os.getpid()}"
        marker.touch()
        marker.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write the results store in {directory} ({exc.strerror}): "
            "choose a writable directory with --out DIR"
        ) from None


# (table, key column, text columns) that can hold paths: command lines, specs, tracebacks.
PATH_TEXT_COLUMNS = [
    ("studies", "study_id", ("command", "config_json")),
    ("runs", "run_id", ("spec_json", "error")),
    ("manifests", "run_id", ("manifest_json",)),
]


def rewritten_copy(src: Path, dst: Path, rewrite: Callable[[str], str]) -> int:
    """A single-file copy of the store at ``src`` with ``rewrite`` applied to the text of
    PATH_TEXT_COLUMNS; returns the values changed. It is vacuumed, so the old text does not
    survive in freed pages, and read through a read-only Store (the source is not touched)."""
    with Store(src, create=False, writer=False) as source:
        target = sqlite3.connect(dst)
        try:
            source.conn.backup(target)  # consistent even while a writer holds the WAL
            changed = 0
            for table, key, cols in PATH_TEXT_COLUMNS:
                for col in cols:
                    rows = target.execute(f"SELECT {key}, {col} FROM {table}").fetchall()
                    for k, value in rows:  # read whole before updating the same table
                        new = rewrite(value) if isinstance(value, str) else value
                        if new != value:
                            target.execute(f"UPDATE {table} SET {col}=? WHERE {key}=?", (new, k))
                            changed += 1
            target.commit()
            target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            target.execute("VACUUM")
        finally:
            target.close()
    return changed


def _create(path: Path) -> None:
    """Create the store whole, then rename it into place (the caller holds the lock).

    A store file therefore either does not exist or holds every table and its schema
    version: a reader or a second writer never sees one half-made (an empty file while the
    first writer starts, or tables without a version when the disk fills mid-creation).
    """
    tmp = path.with_name(f".{path.name}.creating")
    for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):  # a creator that was killed
        leftover.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, path)
    except sqlite3.DatabaseError as exc:
        raise UserError(
            f"cannot create the results store {path} (SQLite: {' '.join(str(exc).split())}): "
            "free disk space or choose another --out, then run again (nothing was stored)"
        ) from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def model_budget_key(study_id: str, model: str) -> str:
    """The meta key of one model's budget in a study across models (``budget:<study_id>``
    holds the first model's, as in a single-model study)."""
    return f"budget:{study_id}:{model}"


class Store:
    """Read/write access to one results store.

    A writer holds the study's writer lock (see ``loraplace.lock``) for as long as it is
    open; a reader opens the file read-only and never writes it, nor the files beside it.
    """

    def __init__(self, path: str | Path, *, create: bool = True, writer: bool = True):
        self.path = resolve_store_path(path)
        self.writer = writer
        exists = self.path.exists()
        if not exists and not create:
            raise UserError(
                f"no results store at {self.path}: give the study's output directory "
                "or its .db file (run `loraplace run` first)"
            )
        if exists:  # before the lock: a file that is no store is refused without a write
            try:
                check_store_file(self.path, identify=writer)
            except UserError:
                holder = live_holder(self.path) if writer else None
                if holder is not None:  # a store being made by an older loraplace
                    raise busy_error(self.path, holder) from None
                raise
        self._lock = WriterLock(self.path) if writer else None
        if self._lock is not None:
            _writable_dir(self.path.parent, create)
            self._lock.acquire()
        try:
            if writer and not exists:
                if self.path.exists():  # made by a writer that finished before our lock
                    check_store_file(self.path)
                else:
                    _create(self.path)
            self.conn = _connect(self.path, writer)
            self._open(writer)
        except sqlite3.DatabaseError as exc:
            self._release()
            raise damaged(self.path, exc) from None
        except BaseException:
            self._release()
            raise
        # Readers: a run still 'running' while no process holds the lock was left by a
        # driver that died; it reads as interrupted (the next writer marks it so).
        self._stale_running = not writer and not writer_alive(self.path)

    def _open(self, writer: bool) -> None:
        self.conn.row_factory = sqlite3.Row
        new = check_store_schema(self.conn, self.path, writer)
        if not writer:
            return
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(_SCHEMA)
        self.conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        if new:
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # A run left 'running' belongs to a driver that died (kill -9, power loss): this
        # process holds the writer lock, so no live driver owns it.
        self.conn.execute(
            "UPDATE runs SET status='interrupted', error='driver stopped mid-run' "
            "WHERE status='running'"
        )

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file, so a crash later leaves a whole .db."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            self._release()

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
        self.checkpoint()  # each finished run reaches the database file itself

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

    def study_links(self) -> list[tuple[str, str]]:
        """(study_id, run_id) for every run of every study (a run may serve several)."""
        rows = self.conn.execute("SELECT study_id, run_id FROM study_runs").fetchall()
        return [(r[0], r[1]) for r in rows]

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
            if self._is_stale(d["status"]):
                d["status"], d["error"] = "interrupted", "driver stopped mid-run (no live writer)"
            out.append(d)
        return out

    def marked_running(self, study_id: str) -> list[str]:
        """Runs of the study whose row says ``running``, live or left by a dead driver (the
        row as written: ``runs`` reads a dead driver's run as interrupted)."""
        rows = self.conn.execute(
            "SELECT r.run_id FROM runs r JOIN study_runs s ON r.run_id = s.run_id "
            "WHERE s.study_id=? AND r.status='running' ORDER BY s.position",
            (study_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def _is_stale(self, status: str) -> bool:
        return status == "running" and self._stale_running

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
        counts: dict[str, int] = {}
        for r in rows:
            status = "interrupted" if self._is_stale(r["status"]) else r["status"]
            counts[status] = counts.get(status, 0) + r["n"]
        return counts
