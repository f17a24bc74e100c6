"""PostgreSQL access: a thread-safe connection pool, transactions, and versioned migrations."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extras

from .events import events

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works: it only has to be the same for every process that migrates.
MIGRATION_LOCK_ID = 727_001

T = TypeVar("T")


def session_options(**settings: object) -> str:
    """libpq's startup `options` giving a connection these settings (`-c name=value` each), or ""
    with DB_SESSION_SETTINGS=role: PgBouncer refuses startup options, so there the database
    roles carry the same values as defaults (backend/privileges.py: session_defaults)."""
    mode = os.environ.get("DB_SESSION_SETTINGS", "startup")
    if mode not in ("startup", "role"):
        raise ValueError(f"DB_SESSION_SETTINGS must be startup or role, not {mode!r}")
    return "" if mode == "role" else " ".join(f"-c {name}={value}" for name, value in settings.items())


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or did not answer in time; the caller may retry later."""


class Database:
    """A small pool of connections with a short statement timeout.

    `run(fn, ...)` gives `fn` a cursor inside one transaction: committed when `fn` returns,
    rolled back when it raises. A connection that the server dropped (a restart, a network
    blip) is discarded with every idle one, and the transaction retried once on a fresh
    connection, so the first call after PostgreSQL comes back succeeds.

    Not psycopg2.pool: it closes every connection returned beyond `minconn` (so a lazy pool
    reconnects on every call) and raises instead of waiting when all are in use.
    """

    def __init__(self, dsn: str, *, max_connections: int = 8, statement_timeout_ms: int = 3000,
                 name: str = "backend"):
        self._dsn = dsn
        self.name = name  # the pool's label in metrics
        self._options = session_options(statement_timeout=statement_timeout_ms, lock_timeout=statement_timeout_ms)
        self._idle: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections

    def _connect(self) -> psycopg2.extensions.connection:
        try:
            return psycopg2.connect(self._dsn, options=self._options or None, connect_timeout=3)
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(type(exc).__name__) from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg2.extensions.connection]:
        waited = time.monotonic()
        got = self._slots.acquire(timeout=10)
        events().pool_wait(self.name, time.monotonic() - waited)
        if not got:
            raise DatabaseUnavailable("no database connection free within 10 s")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._connect()
            yield conn
        finally:
            if conn is not None:
                if conn.closed:
                    self.discard_idle()  # the server went away: the others are dead too
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    def discard_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def warm(self, count: int | None = None) -> None:
        """Open connections ahead of the first requests (at server start)."""
        count = min(count or self.max_connections, self.max_connections)
        fresh = [self._connect() for _ in range(count - len(self._idle))]
        with self._lock:
            self._idle.extend(fresh)

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        for attempt in (1, 2):
            with self._connection() as conn:
                try:
                    with conn:  # commit on success, rollback on error
                        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                            return fn(cur, *args, **kwargs)
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if conn.closed and attempt == 1:
                        log.warning("database connection lost (%s); retrying once", type(exc).__name__)
                        continue
                    raise DatabaseUnavailable(type(exc).__name__) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.discard_idle()


class MigrationsPending(RuntimeError):
    """The schema is behind this code and this database role may not migrate it."""


def pending_migrations(db: Database) -> list[str]:
    """The migration files not applied yet; a read, allowed to every role of the service."""

    def fn(cur) -> list[str]:
        cur.execute("SELECT to_regclass('schema_migrations') AS t")
        done = set()
        if cur.fetchone()["t"] is not None:
            cur.execute("SELECT name FROM schema_migrations")
            done = {row["name"] for row in cur.fetchall()}
        return [path.name for path in sorted(MIGRATIONS_DIR.glob("*.sql")) if path.name not in done]

    return db.run(fn)


def migrate(db: Database, *, grant: bool = False) -> list[str]:
    """Apply the SQL files of migrations/ not applied yet, in name order; returns those applied.
    Then the database roles of backend/privileges.py that exist get exactly their grants.

    An advisory lock makes concurrent starts (several replicas) apply each file once. With
    nothing pending (and grant off) nothing is written: the services' own roles, which may not
    change the schema, pass here; with something pending they stop with MigrationsPending.
    """
    from .privileges import apply_grants

    if not grant and not pending_migrations(db):
        return []

    def apply(cur) -> list[str]:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT name FROM schema_migrations")
        done = {row["name"] for row in cur.fetchall()}
        applied = []
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name in done:
                continue
            cur.execute(path.read_text())
            cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
            applied.append(path.name)
        apply_grants(cur)
        return applied

    try:
        applied = db.run(apply)
    except psycopg2.errors.InsufficientPrivilege:
        raise MigrationsPending("the schema needs migrations this database role may not apply: "
                                "run `python -m backend.migrate` as the owner role (deploy/README.md)") from None
    for name in applied:
        log.info("applied migration %s", name)
    return applied
