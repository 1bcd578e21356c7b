"""The run store: one SQLite file (the run table) beside one run directory per run.

    STORE/runs.sqlite        key, config, status, attempts, summary, error, timestamps
    STORE/runs/NAME-KEY/     the run directory that ``innovwin.train.train`` writes and resumes, named by what
                             sets the run apart in its sweep (``n_train512-seed0-KEY``); stores written before
                             names keep theirs as ``runs/KEY/`` (a run's directory is found by its key suffix)
    STORE/driver.lock        held (flock) by the one sweep driver that writes the table

Only the driver process writes the table: workers (local processes or Ray tasks) return
summaries to it. Every state change is one committed transaction, so killing the driver at
any moment loses no finished run; the next driver finds rows left ``running`` by a dead
driver and queues them again, and ``train`` resumes them from their own training state.
A store on a read-only mount opens for reading (as an immutable file). A SQLite error carries the
store's path as a note, for the command line's one-line message.

The table is kept in SQLite's write-ahead-log mode on a local disk (readers never block the driver). On a network
file system (NFS, SMB, Lustre, ...: :func:`on_network_filesystem`) WAL cannot work: its shared-memory index only
coordinates processes of one host, so a reader on another host could read a torn table. There the driver switches
the file to the rollback journal (``journal_mode=DELETE``, ``synchronous=FULL``), whose file locks the network file
system carries between hosts, so ``report`` and ``runs`` from another host while a sweep runs are safe.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import time
from pathlib import Path

from innovwin.config import UNKEYED, RunConfig, with_added

STATUSES = ("queued", "running", "done", "failed")
SCHEMA_VERSION = 1
DB_NAME = "runs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key      TEXT PRIMARY KEY,
    config   TEXT NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    summary  TEXT,
    error    TEXT,
    cost     REAL NOT NULL DEFAULT 0,
    added    REAL NOT NULL,
    started  REAL,
    finished REAL
)"""


class RunStore:
    """The run table of one store directory.

    ``RunStore(path)`` opens it for reading (reports); ``RunStore(path, write=True)`` takes the
    driver lock first and refuses, with a ValueError, when another driver holds it.
    """

    def __init__(self, path, *, write: bool = False):
        self.path = Path(path)
        self.write = write
        self._lock_file = None
        db = self.path / DB_NAME
        if write:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        elif not db.exists():
            raise ValueError(f"{self.path} is not a run store (no {DB_NAME})")
        try:
            self.db = sqlite3.connect(db if write else _read_only_uri(db), timeout=5.0, isolation_level=None,
                                      uri=not write)
            self._check_and_init()
        except ValueError:
            self.close()
            raise
        except sqlite3.OperationalError as error:  # the disk or the file system, not the file's content
            self.close()
            error.add_note(f"run store {db}")
            raise
        except sqlite3.DatabaseError as error:
            self.close()
            raise ValueError(f"run store {db} is unreadable ({error}); it was left untouched — "
                             "move it aside to start a new store") from None

    # --- opening ---------------------------------------------------------------------
    def _lock(self) -> None:
        self._lock_file = open(self.path / "driver.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "unknown"
            self._lock_file.close()
            self._lock_file = None
            raise ValueError(f"run store {self.path} is in use by another sweep (pid {holder}); "
                             "wait for it or stop it first") from None
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _check_and_init(self) -> None:
        check = self.db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and (version != SCHEMA_VERSION or "runs" not in tables):
            raise sqlite3.DatabaseError(f"not an innovwin run table (schema version {version}, tables {sorted(tables)})")
        if not self.write:
            if not tables:
                raise ValueError(f"{self.path} is not a run store yet (its run table is not created)")
            return
        network = on_network_filesystem(self.path)
        self.db.execute(f"PRAGMA journal_mode={'DELETE' if network else 'WAL'}")
        self.db.execute(f"PRAGMA synchronous={'FULL' if network else 'NORMAL'}")
        if not tables:
            with self._transaction():  # a reader never sees the table without its version
                self.db.execute(_SCHEMA)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self):
        """One atomic, committed change (the connection is in autocommit mode otherwise)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as error:  # e.g. "database or disk is full": name the store (once)
            note = f"run store {self.path / DB_NAME}"
            if note not in getattr(error, "__notes__", ()):
                error.add_note(note)
            raise

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing (driver only) -------------------------------------------------------
    def run_dir(self, key: str, name: str = "") -> Path:
        """The run's directory: the one already holding it, else ``runs/<slug of name>-<key>`` (``runs/<key>``
        without a name)."""
        return self._existing_dirs().get(key) or self.path / "runs" / run_dir_name(key, name)

    def _existing_dirs(self) -> dict[str, Path]:
        """key -> directory, for the run directories present (named ``KEY`` or ``NAME-KEY``)."""
        folder = self.path / "runs"
        if not folder.is_dir():
            return {}
        return {entry.name[-16:]: entry for entry in folder.iterdir()
                if entry.is_dir() and re.fullmatch(r"(.+-)?[0-9a-f]{16}", entry.name)}

    def add(self, runs: dict[str, dict], cost: dict[str, float] | None = None) -> int:
        """Queue the runs not in the table yet; returns how many were new. A row keyed before the budget left the
        run key is found and rekeyed first (:meth:`_adopt`); a run asked with another stop (steps, until, margin)
        takes that config, and a done one is queued again: training resumes it or answers from its rows."""
        self._require_write()
        now = time.time()
        cost = cost or {}
        with self._transaction():
            self._adopt(runs)
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO runs (key, config, status, cost, added) VALUES (?, ?, 'queued', ?, ?)",
                [(key, json.dumps(config, sort_keys=True), cost.get(key, 0.0), now) for key, config in runs.items()])
            added = self.db.total_changes - before
            self._restop(runs)
            return added

    def _restop(self, runs: dict[str, dict]) -> None:
        """Give each row of ``runs`` whose stop (:data:`UNKEYED`) was asked otherwise that config; queue it again
        if it was done."""
        for key, text in self.db.execute("SELECT key, config FROM runs").fetchall():
            with contextlib.suppress(ValueError, TypeError):
                stored = with_added(json.loads(text))
                if key in runs and any(stored.get(name) != runs[key].get(name) for name in UNKEYED):
                    self.db.execute("UPDATE runs SET config = ?, status = CASE status WHEN 'done' THEN 'queued' "
                                    "ELSE status END WHERE key = ?", (json.dumps(runs[key], sort_keys=True), key))

    def _adopt(self, runs: dict[str, dict]) -> None:
        """Rekey the rows (and rename the run directories) that hold one of ``runs`` under an earlier key, from
        before the budget left the key: the one the same command made (:meth:`RunConfig.earlier_key`), else the one
        with the largest budget. A row whose config cannot be read keeps its key (reports name it); the other earlier
        rows of the same run stay, superseded by the adopted one (:func:`mark_superseded`)."""
        present = {key for (key,) in self.db.execute("SELECT key FROM runs")}
        if all(key in present for key in runs):
            return
        earlier: dict[str, list] = {}  # today's key -> [(its earlier key, budget)]
        for key, text in self.db.execute("SELECT key, config FROM runs"):
            with contextlib.suppress(ValueError, TypeError):
                config = json.loads(text)
                today = _today_key(config)
                if today not in (None, key):
                    earlier.setdefault(today, []).append((key, config.get("steps", 0)))
        for key, config in runs.items():
            if key in present or key not in earlier:
                continue
            same_command = RunConfig.from_record(config).earlier_key()
            old = max(earlier[key], key=lambda found: (found[0] == same_command, found[1]))[0]
            folder = self._existing_dirs().get(old)
            if folder is not None and not folder.with_name(folder.name[:-16] + key).exists():
                os.rename(folder, folder.with_name(folder.name[:-16] + key))
            self.db.execute("UPDATE runs SET key = ? WHERE key = ?", (key, old))

    def requeue_orphans(self) -> int:
        """Queue again the rows a dead driver left ``running`` (the lock says it is gone)."""
        self._require_write()
        with self._transaction():
            return self.db.execute("UPDATE runs SET status='queued' WHERE status='running'").rowcount

    def claim(self, key: str) -> None:
        self._set(key, "running", "attempts = attempts + 1, started = ?, error = NULL", time.time())

    def finish(self, key: str, summary: dict) -> None:
        self._set(key, "done", "summary = ?, finished = ?", json.dumps(summary), time.time())

    def fail(self, key: str, error: str) -> None:
        self._set(key, "failed", "error = ?, finished = ?", error, time.time())

    def release(self, key: str) -> None:
        """Put a run that was interrupted (not failed) back in the queue, its attempt not counted."""
        self._set(key, "queued", "attempts = MAX(attempts - 1, 0)")

    def _set(self, key: str, status: str, assignments: str, *values) -> None:
        self._require_write()
        with self._transaction():
            self.db.execute(f"UPDATE runs SET status = ?, {assignments} WHERE key = ?", (status, *values, key))

    def _require_write(self) -> None:
        if not self.write:
            raise ValueError(f"run store {self.path} was opened read-only")

    # --- reading ---------------------------------------------------------------------
    def pending(self, keys, max_attempts: int) -> list[str]:
        """Keys among ``keys`` still to run, longest (by cost) first."""
        wanted = set(keys)
        rows = self.db.execute(
            "SELECT key FROM runs WHERE status = 'queued' OR (status = 'failed' AND attempts < ?) "
            "ORDER BY cost DESC, key", (max_attempts,))
        return [key for (key,) in rows if key in wanted]

    def counts(self, keys=None) -> dict[str, int]:
        wanted = None if keys is None else set(keys)
        counts = dict.fromkeys(STATUSES, 0)
        for key, status in self.db.execute("SELECT key, status FROM runs"):
            if wanted is None or key in wanted:
                counts[status] += 1
        return counts

    def rows(self) -> list[dict]:
        """Every run as a dict (config and summary decoded), oldest first; ``superseded_by`` names the row that
        stands for the same run where this one is an earlier budget of it (:func:`mark_superseded`), else None."""
        return mark_superseded(self._decoded("SELECT * FROM runs ORDER BY added, key"))

    def get(self, key: str) -> dict | None:
        rows = self._decoded("SELECT * FROM runs WHERE key = ?", key)
        return rows[0] if rows else None

    def _json_object(self, row: dict, column: str) -> dict:
        try:
            value = json.loads(row[column])
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise ValueError(f"run store {self.path / DB_NAME}: the {column} of run {row['key']} is malformed "
                             "(not a JSON object)")
        return value

    def _decoded(self, query: str, *params) -> list[dict]:
        cursor = self.db.execute(query, params)
        names = [column[0] for column in cursor.description]
        existing = self._existing_dirs()
        rows = []
        for values in cursor:
            row = dict(zip(names, values))
            row["config"] = with_added(self._json_object(row, "config"))
            row["summary"] = self._json_object(row, "summary") if row["summary"] else None
            row["run_dir"] = str(existing.get(row["key"]) or self.run_dir(row["key"]))
            rows.append(row)
        return rows


def mark_superseded(rows: list[dict]) -> list[dict]:
    """Set each row's ``superseded_by``: rows keyed before the budget left the key that now share one key are
    one run trained to several budgets, counted once. The row under today's key stands for it (the one
    :meth:`RunStore._adopt` rekeyed), else the one with the largest budget; the others name it."""
    earlier: dict[str, list[dict]] = {}  # today's key -> the rows holding it under an earlier key
    for row in rows:
        row["superseded_by"] = None
        today = _today_key(row["config"])
        if today not in (None, row["key"]):
            earlier.setdefault(today, []).append(row)
    keys = {row["key"] for row in rows}
    for today, found in earlier.items():
        kept = today if today in keys else max(found, key=lambda row: row["config"].get("steps", 0))["key"]
        for row in found:
            if row["key"] != kept:
                row["superseded_by"] = kept
    return rows


def _today_key(config: dict) -> str | None:
    """The key today's code gives a stored config, or None where it cannot be read (reports name that row)."""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        return RunConfig.from_record(config).key()
    return None


NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "fuse.glusterfs", "lustre", "gpfs",
    "beegfs", "panfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.rclone", "fuse.cephfs"})


def filesystem_type(path, mounts: str | None = None) -> str:
    """The type of the file system ``path`` lies on: the longest mount point above it in ``mounts`` (the text of
    /proc/self/mounts; read here when None). "unknown" where the mount table cannot be read (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return "unknown"
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # \040 is a space
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def on_network_filesystem(path, mounts: str | None = None) -> bool:
    """Whether ``path`` is on a file system shared over the network (where SQLite's WAL mode is unsafe)."""
    return filesystem_type(path, mounts) in NETWORK_FILESYSTEMS


def _read_only_uri(db: Path) -> str:
    """Open for reading only; on a read-only file system as immutable, since SQLite could not create the
    write-ahead log's shared-memory file beside it (and nothing can write there meanwhile)."""
    immutable = "" if os.access(db.parent, os.W_OK) else "&immutable=1"
    return f"{db.resolve().as_uri()}?mode=ro{immutable}"


def run_dir_name(key: str, name: str = "") -> str:
    """A new run directory's name: ``<slug of name>-<key>``, or the key alone without a name."""
    return "-".join(filter(None, (slug(name), key)))


def slug(name: str, limit: int = 80) -> str:
    """A directory-name form of a run name: ``n_train=512 seed=0`` -> ``n_train512-seed0``,
    ``task=parity:h=6,w=6,g=2`` -> ``task_parity-h6-w6-g2``."""
    parts = []
    for part in name.split():
        field, _, value = part.partition("=")
        value = re.sub(r"[^\w.]+", "-", value.replace("=", "")).strip("-")
        parts.append(field + ("" if re.fullmatch(r"[\d.e+-]+", value) else "_") + value)
    return "-".join(parts)[:limit].strip("-")
