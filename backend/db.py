"""PostgreSQL access: a connection pool (psycopg_pool), transactions, and versioned migrations."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from .events import events

log = logging.getLogger(__name__)
# psycopg_pool logs every checkout and return at INFO, the level our processes log at.
logging.getLogger("psycopg.pool").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works: it only has to be the same for every process that migrates.
MIGRATION_LOCK_ID = 727_001

# The pools' settings, the tracker store's (rasa_server/tracker_store.py) as the backend's.
WAIT_S = 10.0  # at most this long for a free connection, then DatabaseUnavailable
CONNECT_TIMEOUT_S = 3
# psycopg_pool retries a failed connection in the background for up to 5 minutes by default,
# with ever longer pauses, and callers wait for those tries: given up sooner, a new try starts
# at the next caller's request.
RECONNECT_S = 3.0
# Idle connections are kept (psycopg_pool closes them after 10 minutes by default): a pool
# emptied in a quiet hour would make the first callers after PostgreSQL went away wait WAIT_S.
KEEP_IDLE_S = 24 * 3600.0

T = TypeVar("T")


def session_options(*, statement_timeout_ms: int | None = None, lock_timeout_ms: int | None = None,
                    synchronous_commit: str | None = None, base: str = "") -> str:
    """The `options` connection parameter that gives every session of a pool these settings
    (None: the server's, or the role's, default), after `base` (options set elsewhere, such as
    Rasa's search_path). With DB_SESSION_SETTINGS=role only `base`: PgBouncer refuses startup
    options, so there the database roles carry the same values as defaults
    (backend/privileges.py: session_defaults)."""
    mode = os.environ.get("DB_SESSION_SETTINGS", "startup")
    if mode not in ("startup", "role"):
        raise ValueError(f"DB_SESSION_SETTINGS must be startup or role, not {mode!r}")
    settings = {"statement_timeout": statement_timeout_ms, "lock_timeout": lock_timeout_ms,
                "synchronous_commit": synchronous_commit}
    parts = [base] if base else []
    if mode == "startup":
        parts += [f"-c {name}={value}" for name, value in settings.items() if value is not None]
    return " ".join(parts)


def prepare_threshold() -> int | None:
    """psycopg's default (a statement prepared on the server after 5 uses), or never with
    DB_SESSION_SETTINGS=role: PgBouncer in transaction mode gives each transaction any server
    connection, on which a statement prepared on another does not exist."""
    return None if os.environ.get("DB_SESSION_SETTINGS", "startup") == "role" else 5


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or did not answer in time; the caller may retry later."""


class Database:
    """A pool of connections (psycopg_pool's) with a short statement and lock timeout.

    `run(fn, ...)` gives `fn` a cursor, rows as dicts, inside one transaction: committed when
    `fn` returns, rolled back when it raises. A connection that the server dropped (a restart,
    a network blip) is discarded with every idle one, and the transaction retried once on a
    fresh connection, so the first call after PostgreSQL comes back succeeds. Connections are
    not checked at checkout: a ping per call costs a round trip, a retry only when one broke.

    psycopg_pool connects in its background workers and, while PostgreSQL is unreachable, keeps
    trying there while callers wait up to WAIT_S. So that a caller learns at once that the
    database is down (the citizen's apology, Meta's 503), until a connection has succeeded
    (at first, and again after one was lost or the pool gave up reconnecting) each call
    connects on its own, one at a time, and uses that connection once: the first that succeeds
    hands the following calls back to the pool. The pool opens at the first call, in the process
    that makes it.
    """

    def __init__(self, dsn: str, *, max_connections: int = 8, statement_timeout_ms: int = 3000,
                 name: str = "backend"):
        self._dsn = dsn
        self.name = name  # the pool's label in metrics
        self.max_connections = max_connections
        self._kwargs = {"options": session_options(statement_timeout_ms=statement_timeout_ms,
                                                   lock_timeout_ms=statement_timeout_ms),
                        "connect_timeout": CONNECT_TIMEOUT_S, "row_factory": dict_row,
                        "prepare_threshold": prepare_threshold()}
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._alone = threading.Lock()  # a call's own connection: one attempt at a time
        self._reachable = False
        self._failed: tuple[float, str] = (float("-inf"), "")  # the last own attempt's: when, why

    def _opened(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._dsn, kwargs=self._kwargs, min_size=0, max_size=self.max_connections, open=True,
                    name=self.name, timeout=WAIT_S, max_idle=KEEP_IDLE_S, reconnect_timeout=RECONNECT_S,
                    reconnect_failed=self._unreachable)
            return self._pool

    def _unreachable(self, pool: ConnectionPool | None = None) -> None:
        self._reachable = False

    def _connect_alone(self, asked: float) -> psycopg.Connection | None:
        """A connection of the call's own, or None when another call's has just succeeded (the
        pool serves again). A call that waited while another's attempt failed fails with it."""
        with self._alone:
            if self._reachable:
                return None
            events().pool_wait(self.name, time.monotonic() - asked)  # for the others' attempts
            failed_at, reason = self._failed
            if failed_at >= asked:
                raise DatabaseUnavailable(reason)
            try:
                conn = psycopg.connect(self._dsn, **self._kwargs)
            except psycopg.Error as exc:
                self._failed = (time.monotonic(), type(exc).__name__)
                raise DatabaseUnavailable(type(exc).__name__) from exc
            self._reachable = True
            return conn

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        asked = time.monotonic()
        if not self._reachable:
            conn = self._connect_alone(asked)
            if conn is not None:
                yield conn
                return
        pool = self._opened()
        try:
            conn = pool.getconn()
        except PoolTimeout:
            raise DatabaseUnavailable(f"no database connection free within {WAIT_S:g} s") from None
        finally:
            events().pool_wait(self.name, time.monotonic() - asked)
        try:
            yield conn
        finally:
            pool.putconn(conn)  # a broken one is replaced by the pool

    def _lost(self) -> None:
        """A connection broke: the idle ones most likely too (a restart)."""
        self._unreachable()
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.drain()

    def warm(self, count: int | None = None) -> None:
        """Open connections ahead of the first requests (at server start), kept from then on."""
        count = min(count or self.max_connections, self.max_connections)
        pool = self._opened()
        pool.resize(count, self.max_connections)
        try:
            pool.wait(WAIT_S)
        except PoolTimeout:
            with self._lock:  # wait() closed it
                if self._pool is pool:
                    self._pool = None
            raise DatabaseUnavailable(f"{count} database connections not open within {WAIT_S:g} s") from None
        self._reachable = True

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        def transaction(conn: psycopg.Connection) -> T:
            # Commit on success, rollback on error; a call's own connection is then closed.
            with conn:
                with conn.cursor() as cur:
                    return fn(cur, *args, **kwargs)

        return self._once_more_if_lost(transaction)

    def statement(self, sql: str, parameters: Any = None) -> list[dict]:
        """One statement committed on its own (autocommit): one round trip, where run() adds a
        BEGIN and a COMMIT. Its rows (none for a statement that returns none)."""
        def alone(conn: psycopg.Connection) -> list[dict]:
            conn.autocommit = True
            try:
                with conn:  # a call's own connection is then closed
                    with conn.cursor() as cur:
                        cur.execute(sql, parameters)
                        return cur.fetchall() if cur.description is not None else []
            finally:
                if not conn.closed and not conn.broken:
                    conn.autocommit = False  # as the pool's other callers expect

        return self._once_more_if_lost(alone)

    def _once_more_if_lost(self, use: Callable[[psycopg.Connection], T]) -> T:
        for attempt in (1, 2):
            with self._connection() as conn:
                try:
                    return use(conn)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if conn.broken:
                        self._lost()
                        if attempt == 1:
                            log.warning("database connection lost (%s); retrying once", type(exc).__name__)
                            continue
                    raise DatabaseUnavailable(type(exc).__name__) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the pool's connections (those in use when they come back); a later call opens
        a new pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


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
    except psycopg.errors.InsufficientPrivilege:
        raise MigrationsPending("the schema needs migrations this database role may not apply: "
                                "run `python -m backend.migrate` as the owner role (deploy/README.md)") from None
    for name in applied:
        log.info("applied migration %s", name)
    return applied
