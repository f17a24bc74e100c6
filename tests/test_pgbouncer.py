"""PgBouncer in front of PostgreSQL (issue 21): Debian's pgbouncer, in transaction mode, between
the project's embedded PostgreSQL and the real pools (the backend's Database, Rasa's tracker
store), the database set up as deploy/ does (roles.psql, then the migration as the owner).

With the pools' startup options (DB_SESSION_SETTINGS=startup, the default) PgBouncer refuses
every connection, as it does in production; with DB_SESSION_SETTINGS=role the migration gives
each role its timeouts as defaults (backend/privileges.py), and the same pools work through it
with the same limits."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from rasa.shared.core.events import ActionExecuted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from backend import privileges
from backend.db import Database, DatabaseUnavailable, migrate
from rasa_server.tracker_store import TrackerStoreUnavailable
from tests.conftest import ROOT, free_port, make_store
from test_security_deploy import ROLE_PASSWORDS, ROLES_SQL, _as, _psql
from whatsapp.dedupe import SeenMessages

ACTIONS_TIMEOUT_MS = 1500  # DB_STATEMENT_TIMEOUT_MS of this deployment: not the default 3000


def _pgbouncer() -> str | None:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"  # Debian's, outside a user's PATH
    return found if os.access(found, os.X_OK) else None


@pytest.fixture(scope="module")
def bouncer(server_url):
    """A fresh database as deploy/ sets it up, PgBouncer in transaction mode on a free loopback
    port in front of it, and the migration run through PgBouncer as the owner with
    DB_SESSION_SETTINGS=role. Yields a function: role -> that role's URL through PgBouncer."""
    binary = _pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian's package; `make test` installs it: tools/system-packages)")
    name = f"vaksin_test_bouncer_{os.getpid()}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.cursor().execute(f"CREATE DATABASE {name}")
    url = psycopg2.extensions.make_dsn(server_url, dbname=name)
    subprocess.run([_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(ROLES_SQL)]
                   + [f"-v{role}_password={password}" for role, password in ROLE_PASSWORDS.items()],
                   check=True, capture_output=True, timeout=60)

    # PgBouncer refuses to run as root: as root, it runs as the embedded server's own user, who
    # may reach the server's socket directory.
    run_as = {}
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("embedded_postgres")
        run_as = {"user": user.pw_uid, "group": user.pw_gid}
        os.chown(folder, user.pw_uid, user.pw_gid)
    server = psycopg2.extensions.parse_dsn(server_url)
    port = free_port()
    (folder / "userlist.txt").write_text("".join(f'"vaksin_{role}" "{password}"\n'
                                                 for role, password in ROLE_PASSWORDS.items()))
    (folder / "pgbouncer.ini").write_text(f"""[databases]
{name} = host={server.get("host", "localhost")} port={server.get("port", "5432")} dbname={name}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
""")
    for path in folder.iterdir():
        path.chmod(0o600)
        if run_as:
            os.chown(path, run_as["user"], run_as["group"])
    log = open(folder / "pgbouncer.log", "wb")
    process = subprocess.Popen([binary, str(folder / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT,
                               **run_as)

    def through(role: str) -> str:
        return _as(f"host=127.0.0.1 port={port} dbname={name}", role)

    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (folder / "pgbouncer.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (folder / "pgbouncer.log").read_text()
                time.sleep(0.1)
        env = {**os.environ, "DATABASE_URL": through(privileges.OWNER), "REQUIRE_SECRETS": "1",
               "PYTHONPATH": str(ROOT), "DB_SESSION_SETTINGS": "role",
               "DB_STATEMENT_TIMEOUT_MS": str(ACTIONS_TIMEOUT_MS)}
        migrated = subprocess.run([sys.executable, "-m", "backend.migrate"], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        yield through
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _show(db: Database, setting: str) -> str:
    def fn(cur):
        cur.execute(f"SHOW {setting}")
        return next(iter(cur.fetchone().values()))

    return db.run(fn)


def _conversation(sender: str) -> DialogueStateTracker:
    return DialogueStateTracker.from_events(sender, [ActionExecuted("action_listen"),
                                                     UserUttered("halo", {"name": "greet"})])


def test_startup_options_are_refused_by_pgbouncer_as_in_production(bouncer, monkeypatch):
    monkeypatch.delenv("DB_SESSION_SETTINGS", raising=False)
    db = Database(bouncer(privileges.ACTIONS), max_connections=1)
    with pytest.raises(DatabaseUnavailable) as caught:
        db.run(lambda cur: cur.execute("SELECT 1"))
    assert "unsupported startup parameter: options" in str(caught.value.__cause__)
    db.close()

    store = make_store(bouncer(privileges.RASA))
    try:
        with pytest.raises(TrackerStoreUnavailable) as caught:
            asyncio.run(store.save(_conversation("bouncer-refused")))
        assert "unsupported startup parameter: options" in str(caught.value.__cause__)
    finally:
        store.dispose()


def test_with_role_settings_the_pools_work_through_pgbouncer_with_the_same_timeouts(bouncer, monkeypatch):
    monkeypatch.setenv("DB_SESSION_SETTINGS", "role")
    actions = Database(bouncer(privileges.ACTIONS), max_connections=2)
    try:
        assert _show(actions, "statement_timeout") == f"{ACTIONS_TIMEOUT_MS}ms"
        assert _show(actions, "lock_timeout") == f"{ACTIONS_TIMEOUT_MS}ms"
        assert migrate(actions) == []  # the services' check at start: nothing pending
        assert actions.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM accounts"), cur.fetchone()["n"])[1]) == 0
        # psycopg prepares a statement used 5 times on the server; PgBouncer 1.18 would then run
        # it on a server connection where it was never prepared: prepared statements are off.
        other = Database(bouncer(privileges.ACTIONS), max_connections=1)  # a second process's pool
        try:
            for _ in range(12):
                for db in (actions, other):
                    assert db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM accounts WHERE id > %s", (0,)),
                                               cur.fetchone()["n"])[1]) == 0
        finally:
            other.close()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="QueryCanceled"):
            actions.run(lambda cur: cur.execute("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 4  # cancelled at 1.5 s, not slept out
        assert _show(actions, "statement_timeout") == f"{ACTIONS_TIMEOUT_MS}ms"  # the pool goes on
    finally:
        actions.close()

    # Rasa's role: the channels' pool (the pool's default, 3 s) and its dedupe store...
    channels = Database(bouncer(privileges.RASA), max_connections=2)
    try:
        assert _show(channels, "statement_timeout") == "3s"
        seen = SeenMessages(channels, keep_days=7)
        assert seen.claim(["wamid.B1", "wamid.B2"]) == {"wamid.B1", "wamid.B2"} and seen.claim(["wamid.B1"]) == set()
    finally:
        channels.close()

    # ...and the tracker store, whose INSERTs alone commit without waiting for the disk.
    store = make_store(bouncer(privileges.RASA))
    try:
        asyncio.run(store.save(_conversation("bouncer-1")))
        store._recent.clear()  # read back from the table
        for _ in range(6):  # the same statements again and again, on shared server connections
            store._recent.clear()
            again = asyncio.run(store.retrieve("bouncer-1"))
        assert again.latest_message.text == "halo" and [e.type_name for e in again.events] == ["action", "user"]
        assert asyncio.run(store._rows("SHOW statement_timeout", {})) == [("3s",)]
        with_prefix = store._insert_prefix + "SELECT current_setting('synchronous_commit')"
        assert asyncio.run(store._rows(with_prefix, {}, two_statements=True)) == [("off",)]
        # SET LOCAL ends with its statement's transaction: PgBouncer's shared server connections
        # (the channels' too) keep the server's durable default.
        assert asyncio.run(store._rows("SHOW synchronous_commit", {})) == [("on",)]
    finally:
        store.dispose()


def test_the_role_defaults_are_what_the_pools_send_as_startup_options(bouncer, monkeypatch):
    """Each role's defaults in the database, as the migration set them, against the options the
    processes connecting as it send without PgBouncer."""
    monkeypatch.delenv("DB_SESSION_SETTINGS", raising=False)
    env = {"DB_STATEMENT_TIMEOUT_MS": str(ACTIONS_TIMEOUT_MS)}
    defaults = privileges.session_defaults(env)
    from backend import Backend, Settings
    from backend.retention import STATEMENT_TIMEOUT_MS

    backend = Backend.create(Settings.from_env({**env, "VAR_DIR": str(ROOT / "var"), "OTP_HASH_KEY": "x"}), dsn="x")
    sent = {privileges.ACTIONS: backend.db._kwargs["options"], privileges.RASA: Database("x")._kwargs["options"],
            privileges.RETENTION: Database("x", statement_timeout_ms=STATEMENT_TIMEOUT_MS)._kwargs["options"],
            privileges.OWNER: Database("x", statement_timeout_ms=privileges.MIGRATION_TIMEOUT_MS)._kwargs["options"]}
    assert {role: " ".join(f"-c {k}={v}" for k, v in values.items()) for role, values in defaults.items()} == sent

    monkeypatch.setenv("DB_SESSION_SETTINGS", "role")
    owner = Database(bouncer(privileges.OWNER), max_connections=1)
    try:
        stored = owner.run(lambda cur: (cur.execute(
            "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"), cur.fetchall())[1])
    finally:
        owner.close()
    assert {row["rolname"]: sorted(row["setconfig"]) for row in stored} == {
        role: sorted(f"{k}={v}" for k, v in values.items()) for role, values in defaults.items()}


def test_without_the_owners_membership_the_migration_stops_and_says_what_to_run(bouncer, server_url):
    """A database of an earlier release, whose roles.psql did not make the owner a member."""
    name = psycopg2.extensions.parse_dsn(bouncer(privileges.OWNER))["dbname"]
    superuser = psycopg2.connect(psycopg2.extensions.make_dsn(server_url, dbname=name))
    superuser.autocommit = True
    superuser.cursor().execute("REVOKE vaksin_rasa FROM vaksin_owner")
    try:
        env = {**os.environ, "DATABASE_URL": bouncer(privileges.OWNER), "REQUIRE_SECRETS": "1",
               "PYTHONPATH": str(ROOT), "DB_SESSION_SETTINGS": "role"}
        refused = subprocess.run([sys.executable, "-m", "backend.migrate"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1
        assert ("this role may not set the defaults of ['vaksin_rasa']; run deploy/k8s/postgres/roles.psql again"
                in refused.stderr)
    finally:
        superuser.cursor().execute("GRANT vaksin_rasa TO vaksin_owner")
        superuser.close()
