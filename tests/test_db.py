"""backend/db.py's Database (psycopg_pool underneath) on the real PostgreSQL: the timeouts of
every session, a full pool that waits and then gives up, a connection lost in a restart retried
once, and a database that is down failing at once rather than after the pool's wait."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import backend.db as db_module
from backend import events as events_module
from backend.db import Database, DatabaseUnavailable
from conftest import free_port


class Waits:
    """The pool-wait metric's calls (backend/events.py), as a process's metrics receive them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def pool_wait(self, pool: str, seconds: float) -> None:
        self.seen.append((pool, seconds))

    def otp_delivery(self, outcome: str) -> None:
        pass

    def otp_refused(self, limit: str) -> None:
        pass

    def graph_error(self, code: str) -> None:
        pass


@pytest.fixture
def waits(monkeypatch) -> Waits:
    recorder = Waits()
    monkeypatch.setattr(events_module, "_current", recorder)
    return recorder


def scalar(db: Database, sql: str):
    return db.run(lambda cur: (cur.execute(sql), next(iter(cur.fetchone().values())))[1])


def test_every_session_has_the_statement_and_lock_timeouts(database_url):
    db = Database(database_url, statement_timeout_ms=400)
    try:
        for _ in range(2):  # the first call's own connection, then the pool's
            assert (scalar(db, "SHOW statement_timeout"), scalar(db, "SHOW lock_timeout")) == ("400ms", "400ms")
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="QueryCanceled"):
            scalar(db, "SELECT pg_sleep(3)")
        assert time.monotonic() - started < 2
        assert scalar(db, "SELECT 'masih jalan' AS t") == "masih jalan"  # the connection still serves
    finally:
        db.close()


def test_a_full_pool_waits_for_a_free_connection_then_gives_up(database_url, monkeypatch, waits):
    monkeypatch.setattr(db_module, "WAIT_S", 0.5)
    db = Database(database_url, max_connections=1, name="test_full")
    holding, release = threading.Event(), threading.Event()

    def hold(cur):
        cur.execute("SELECT 1")
        holding.set()
        release.wait(10)

    try:
        assert scalar(db, "SELECT 1 AS one") == 1
        with ThreadPoolExecutor(2) as threads:
            held = threads.submit(db.run, hold)
            assert holding.wait(5)
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="no database connection free within 0.5 s"):
                scalar(db, "SELECT 1 AS one")
            assert 0.5 <= time.monotonic() - started < 2
            waiting = threads.submit(scalar, db, "SELECT 2 AS two")
            time.sleep(0.2)
            release.set()  # the held connection comes back: the waiting call gets it
            assert waiting.result(5) == 2
            held.result(5)
    finally:
        release.set()
        db.close()
    mine = [seconds for pool, seconds in waits.seen if pool == "test_full"]
    assert len(mine) == 4 and max(mine) >= 0.5  # every call counted, the refused one's wait too


def test_a_connection_lost_in_a_restart_is_retried_once_on_a_fresh_one(database_url, caplog):
    db = Database(database_url, max_connections=2)
    try:
        scalar(db, "SELECT 1 AS one")
        pooled = scalar(db, "SELECT pg_backend_pid() AS pid")
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pooled,))
        with caplog.at_level(logging.WARNING, logger="backend.db"):
            assert scalar(db, "SELECT pg_backend_pid() AS pid") != pooled  # no error for the caller
        assert "database connection lost (AdminShutdown); retrying once" in caplog.text
        assert scalar(db, "SELECT 'lagi' AS t") == "lagi"
    finally:
        db.close()


def test_a_statement_alone_is_committed_by_itself_and_retried_once_on_a_lost_connection(database_url, caplog):
    db = Database(database_url, max_connections=1)
    try:
        db.statement("CREATE TABLE IF NOT EXISTS statement_probe (v text)")
        assert db.statement("INSERT INTO statement_probe VALUES (%s) RETURNING v", ("satu",)) == [{"v": "satu"}]
        # No transaction was left open: the row is there for everyone, and the pool's one
        # connection is back to transactions for run().
        with psycopg.connect(database_url) as other:
            assert other.execute("SELECT count(*) FROM statement_probe").fetchone() == (1,)
        assert db.run(lambda cur: cur.connection.autocommit) is False
        assert scalar(db, "SELECT current_setting('transaction_isolation') AS t") == "read committed"
        with pytest.raises(psycopg.errors.UndefinedTable):  # as from run(): a mistake, not an outage
            db.statement("SELECT * FROM no_such_table")
        assert db.run(lambda cur: cur.connection.autocommit) is False
        pooled = db.statement("SELECT pg_backend_pid() AS pid")[0]["pid"]
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pooled,))
        with caplog.at_level(logging.WARNING, logger="backend.db"):
            assert db.statement("SELECT pg_backend_pid() AS pid")[0]["pid"] != pooled
        assert "database connection lost (AdminShutdown); retrying once" in caplog.text
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("DROP TABLE IF EXISTS statement_probe")
        db.close()


def test_a_database_that_is_down_fails_at_once_for_every_caller():
    db = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/none", max_connections=2)
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="OperationalError"):
                scalar(db, "SELECT 1 AS one")
            assert time.monotonic() - started < 1  # not the pool's WAIT_S of retries
        started = time.monotonic()
        with ThreadPoolExecutor(6) as threads:
            outcomes = [threads.submit(scalar, db, "SELECT 1 AS one") for _ in range(6)]
            errors = [type(outcome.exception(5)) for outcome in outcomes]
        assert errors == [DatabaseUnavailable] * 6 and time.monotonic() - started < 2
    finally:
        db.close()
