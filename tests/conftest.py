"""Shared fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL), a controllable clock,
a backend seeded with the demo citizens for every test, and helpers to read the OTP outbox."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import Backend, Settings  # noqa: E402
from backend.db import migrate  # noqa: E402
from backend.repository import utcnow  # noqa: E402
from backend.seed import seed_demo  # noqa: E402

# One database per test session: sessions running at once (two checkouts' CI, a developer's
# run beside another) never drop each other's data.
TEST_DB = f"vaksin_test_{os.getpid()}"
DATA_TABLES = ["notifications", "handoffs", "ticket_notes", "audit_log", "tickets", "certificate_links", "auth_sessions", "otp_deliveries", "otp_challenges",
               "certificates", "vaccinations", "citizens", "accounts"]


def make_store(database_url: str):
    """The project's tracker store (Rasa's SQL store, events table included) on that database."""
    from rasa.shared.core.domain import Domain

    from rasa_server.tracker_store import StrictSQLTrackerStore
    from tools.stack import tracker_env

    env = tracker_env(database_url)
    return StrictSQLTrackerStore(Domain.load(str(ROOT / "domain.yml")), dialect="postgresql",
                                 host=env["TRACKER_DB_HOST"], port=env["TRACKER_DB_PORT"],
                                 db=env["TRACKER_DB_NAME"], username=env["TRACKER_DB_USER"],
                                 password=env["TRACKER_DB_PASSWORD"])


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_stack(running, log_dir: Path):
    """Both processes of a test's Stack started; on failure their logs' tails are printed and
    whatever started is stopped."""
    try:
        running.start_actions()
        running.start_rasa()
    except Exception:
        running.stop()
        for log in sorted(log_dir.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-4000:]}")
        raise
    return running


@pytest.fixture(scope="session")
def server_url() -> str:
    """A PostgreSQL server for the whole test session (a database of its own is created on it)."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from backend import embedded

    return embedded.start(ROOT / "var" / "test-pgdata")


@pytest.fixture(scope="session")
def database_url(server_url: str) -> str:
    """A fresh database on that server, migrated once."""
    admin = psycopg.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaksin_test_%'")
        for (name,) in cur.fetchall():  # left by sessions that were killed
            pid = int(name.rsplit("_", 1)[1]) if name.rsplit("_", 1)[1].isdigit() else 0
            if pid == os.getpid() or not _alive(pid):
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {TEST_DB}")
        # Tests commit thousands of tiny transactions; durability across a crash is not needed.
        cur.execute(f"ALTER DATABASE {TEST_DB} SET synchronous_commit = off")
    admin.close()
    url = make_conninfo(server_url, dbname=TEST_DB)
    backend = Backend.create(Settings.from_env({"VAR_DIR": str(ROOT / "var"), "OTP_HASH_KEY": "x"}), dsn=url)
    migrate(backend.db)
    backend.db.close()
    yield url
    try:
        admin = psycopg.connect(server_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
        admin.close()
    except psycopg.Error:
        pass  # the server already stopped: the next session drops it


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def assembled(settings: Settings, *, dsn: str, clock=utcnow) -> Backend:
    """The backend as the action server assembles it (actions/backend.py): with the OTP sender
    OTP_SENDER names plugged in."""
    from actions.senders import make_otp_sender

    return Backend.create(settings, dsn=dsn, clock=clock, otp_sender=make_otp_sender(settings, clock))


class Clock:
    """Time that tests move forward by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc))


@pytest.fixture
def settings_env(tmp_path: Path) -> dict:
    """The environment the test backend reads; tests may change it before `backend` is built."""
    return {"VAR_DIR": str(tmp_path), "OTP_OUTBOX": str(tmp_path / "outbox.jsonl"),
            "OTP_HASH_KEY": "test-key-not-secret"}


@pytest.fixture
def backend(database_url: str, settings_env: dict, clock: Clock):
    backend = assembled(Settings.from_env(settings_env), dsn=database_url, clock=clock)

    def reset(cur):
        cur.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
        cur.execute("ALTER SEQUENCE ticket_number_seq RESTART")

    backend.db.run(reset)
    seed_demo(backend.db)
    yield backend
    backend.db.close()


class Outbox:
    """The development outbox. Codes are delivered from a queue after the reply: given a backend
    (no worker running), reading first delivers what is due, in this thread; given only the
    database of a stack whose action server delivers, reading waits until the queue is empty."""

    def __init__(self, path: Path, backend=None, *, db=None):
        self.path = path
        self.backend = backend
        self.db = db

    def wait_for_delivery(self, timeout: float = 10.0) -> None:
        import time

        if self.backend is not None:
            self.backend.otp.drain()
        if self.db is None:
            return
        deadline = time.monotonic() + timeout
        while self.db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM otp_deliveries"),
                                       cur.fetchone()["n"])[1]):
            assert time.monotonic() < deadline, "OTP codes still queued after 10 s"
            time.sleep(0.02)

    def messages(self, to: str | None = None) -> list[dict]:
        self.wait_for_delivery()
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [row for row in rows if to is None or row["to"] == to]

    def last_code(self, to: str) -> str:
        messages = self.messages(to)
        assert messages, f"no message to {to} in the outbox"
        return re.search(r"\b(\d{6})\b", messages[-1]["text"]).group(1)


@pytest.fixture
def outbox(backend) -> Outbox:
    return Outbox(backend.settings.otp_outbox, backend)


@pytest.fixture(scope="module")
def action_app():
    """The action server's Sanic app (actions/server.py), for its test client."""
    from sanic import Sanic

    from actions.server import build_app

    Sanic.test_mode = True  # several apps named "actions" in one test process
    return build_app()


@pytest.fixture
def action_client(action_app, backend):
    """The action server's test client, backed by the test backend."""
    from actions import backend as action_backend

    action_backend.set_backend(backend)
    yield action_app.test_client
    action_backend.set_backend(None)


async def serve_on_loopback(app, port: int = 0):
    """An aiohttp application served on 127.0.0.1 (on a free port unless one is given): its
    runner, to clean up, and its port."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]
