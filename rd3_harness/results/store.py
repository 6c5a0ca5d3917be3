"""The results store: SQLite (stdlib) under the output folder.

One row per run (its JSON document) and one per (run, student, seed) record. Each write is one
transaction, committed with `synchronous=FULL`; several processes may write at once (busy timeout).
On a local disk the journal is WAL; on a shared filesystem (NFS, Lustre, ...: detected from
/proc/mounts, or `RD3_STORE_MODE=shared`) WAL's shared memory is unsafe, so the store uses the
rollback journal, whose locks are plain file locks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rd3_harness.errors import UsageError
from rd3_harness.results.record import Run, RunRecord

STORE_NAME = "results.sqlite"
STORE_MODES = ("auto", "wal", "shared")
SHARED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "cifs", "smb3", "smbfs", "gpfs", "beegfs", "ceph", "glusterfs", "9p", "fuse.sshfs"}
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    status TEXT NOT NULL,
    protocol_hash TEXT NOT NULL,
    protocol_name TEXT NOT NULL,
    method TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    student TEXT NOT NULL,
    seed INTEGER NOT NULL,
    protocol_hash TEXT NOT NULL,
    method TEXT NOT NULL,
    top1 REAL NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (run_id, student, seed)
);
CREATE INDEX IF NOT EXISTS records_by_hash ON records (protocol_hash, method);
"""


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str:
    """The type of the filesystem holding `path` (the longest matching mount point), or "" if unknown."""
    target, best, kind = os.path.realpath(path), -1, ""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def store_mode(folder: Path) -> str:
    """`wal` or `shared`: `RD3_STORE_MODE` when set to one of them, else from the filesystem type."""
    mode = os.environ.get("RD3_STORE_MODE", "auto").strip().lower() or "auto"
    if mode not in STORE_MODES:
        raise UsageError(f"RD3_STORE_MODE={mode!r}: use one of {', '.join(STORE_MODES)}")
    if mode == "auto":
        return "shared" if filesystem_type(folder) in SHARED_FILESYSTEMS else "wal"
    return mode


def _journal_mode(db: sqlite3.Connection, mode: str, timeout: float = 60.0) -> None:
    """Put the database in `mode` unless it is already there. Switching takes an exclusive lock
    for which SQLite does not wait (processes opening a new store together, such as torchrun's
    ranks, get 'database is locked' at once), so the switch is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != mode:
                db.execute(f"PRAGMA journal_mode={mode}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store:
    def __init__(self, path: Path, mode: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.mode = mode or store_mode(self.path.parent)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @classmethod
    def in_folder(cls, folder: Path) -> Store:
        return cls(Path(folder) / STORE_NAME)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            _journal_mode(db, "wal" if self.mode == "wal" else "delete")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def put_run(self, run: Run) -> None:
        doc = run.model_dump_json(by_alias=True)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "status=excluded.status, document=excluded.document",
                (run.run_id, run.created, run.status, run.protocol_hash, run.protocol_name, run.plugin.name, doc),
            )

    def put_record(self, record: RunRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.student,
                    record.seed,
                    record.protocol_hash,
                    record.method,
                    record.top1,
                    record.model_dump_json(),
                ),
            )

    def runs(
        self, *, protocol_hash: str | None = None, method: str | None = None, status: str | None = None
    ) -> list[Run]:
        query, args = "SELECT document FROM runs WHERE 1=1", []
        for column, value in (("protocol_hash", protocol_hash), ("method", method), ("status", status)):
            if value is not None:
                query += f" AND {column} = ?"
                args.append(value)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created, run_id", args).fetchall()
        return [Run.model_validate_json(r[0]) for r in rows]

    def resumable(self, run_key: str) -> Run | None:
        """The latest unfinished run of a command whose process is gone (or that failed)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT document FROM runs WHERE status IN ('running', 'failed') ORDER BY created, run_id"
            ).fetchall()
        runs = (Run.model_validate_json(r[0]) for r in rows)
        candidates = [r for r in runs if r.run_key == run_key and r.state in ("interrupted", "failed")]
        return candidates[-1] if candidates else None

    def run(self, run_id: str) -> Run:
        with self._connect() as db:
            rows = db.execute("SELECT document FROM runs WHERE run_id LIKE ?", (run_id + "%",)).fetchall()
        if len(rows) != 1:
            raise UsageError(f"{'no' if not rows else 'more than one'} run matches {run_id!r} in {self.path}")
        return Run.model_validate_json(rows[0][0])

    def records(self, run_id: str | None = None, *, protocol_hash: str | None = None) -> list[RunRecord]:
        query, args = "SELECT document FROM records WHERE 1=1", []
        if run_id is not None:
            query, args = query + " AND run_id = ?", [*args, run_id]
        if protocol_hash is not None:
            query, args = query + " AND protocol_hash = ?", [*args, protocol_hash]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY run_id, student, seed", args).fetchall()
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def export(self, run_id: str) -> dict:
        """A run and its records as one JSON document (what authors hand to reviewers)."""
        run = self.run(run_id)
        return export_document(run, self.records(run.run_id))

    def integrity(self) -> str:
        with self._connect() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]


def export_document(run: Run, records: list[RunRecord]) -> dict:
    """A run and its records as one JSON document (`rd3h results export`, `rd3h run --json`)."""
    return {
        "run": json.loads(run.model_dump_json(by_alias=True)),
        "records": [json.loads(r.model_dump_json()) for r in records],
    }
