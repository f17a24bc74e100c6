"""Backups that restore (tools/backup.py, `make backup` / `make restore`) on a real PostgreSQL,
run as the operator runs them: `python -m tools.backup` in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
import pytest
from psycopg import sql

from actions import wording
from backend import Backend, Settings
from backend.tickets import Tickets
from conftest import ROOT, Outbox, assembled


@pytest.fixture
def scratch_db(server_url, tmp_path):
    """A database of its own, migrated and seeded as `make run` leaves it: a restore replaces
    its whole schema, which the session's shared test database must not undergo."""
    name = f"vaksin_backup_{os.getpid()}"
    admin = psycopg.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    backend = assembled(Settings.from_env(_settings(tmp_path)), dsn=url)
    backend.prepare()
    backend.db.close()
    yield url
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


def _settings(tmp_path: Path) -> dict:
    return {"VAR_DIR": str(tmp_path), "OTP_OUTBOX": str(tmp_path / "outbox.jsonl"), "OTP_HASH_KEY": "backup-test"}


def run_tool(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "VAR_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("BACKUP_DIR", None)
    return subprocess.run([sys.executable, "-m", "tools.backup", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def snapshot(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and a checksum of all its rows, and every sequence's position."""
    state = {}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S') ORDER BY 1")
        for name, kind in cur.fetchall():
            if kind == "S":
                cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(name)))
                state[name] = cur.fetchone()
            else:
                cur.execute(sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                                    " FROM {} t").format(sql.Identifier(name)))
                state[name] = cur.fetchone()
    conn.close()
    return state


def change_everything(url: str, tmp_path: Path) -> Backend:
    """What happens after a backup: a citizen's name changed and a ticket opened through the
    backend (each with its audit row), a conversation event, a certificate row gone."""
    backend = assembled(Settings.from_env(_settings(tmp_path)), dsn=url)
    outbox = Outbox(backend.settings.otp_outbox, backend)
    backend.otp.request("after-backup", "+6281234567003")
    assert backend.otp.verify("after-backup", outbox.last_code("+6281234567003")).status == "ok"
    assert backend.repo.change_name("after-backup", "Agus Wijaya").full_name == "Agus Wijaya"
    Tickets(backend.repo, wording.domain()).open("after-backup", "certificate_missing", "sertifikat belum ada", "rest")

    def more(cur):
        cur.execute("INSERT INTO events (sender_id, type_name, timestamp, data) VALUES ('after', 'user', 1, '{}')")
        cur.execute("DELETE FROM vaccinations WHERE id = (SELECT max(id) FROM vaccinations)"
                    " AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.vaccination_id = vaccinations.id)")

    backend.db.run(more)
    return backend


def name_of_citizen_with_phone(url: str, phone: str) -> str:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT c.full_name FROM citizens c JOIN accounts a ON a.id = c.account_id"
                    " WHERE a.phone = %s ORDER BY c.id LIMIT 1", (phone,))
        name = cur.fetchone()[0]
    conn.close()
    return name


def test_backup_then_changes_then_restore_gives_back_exactly_the_backup(scratch_db, tmp_path):
    before = snapshot(scratch_db)
    started = time.monotonic()
    made = run_tool(scratch_db, tmp_path, "backup")
    backup_seconds = time.monotonic() - started
    assert made.returncode == 0, made.stderr
    dumps = list((tmp_path / "backups").glob("*.dump"))
    assert len(dumps) == 1 and dumps[0].name.endswith("Z.dump")
    checksum = dumps[0].with_name(dumps[0].name + ".sha256")
    # Only the operator's account may read a copy of every citizen's record.
    assert (dumps[0].stat().st_mode & 0o777, checksum.stat().st_mode & 0o777) == (0o600, 0o600)
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    assert checksum.read_text().split()[1] == dumps[0].name

    backend = change_everything(scratch_db, tmp_path)
    backend.db.close()
    changed = snapshot(scratch_db)
    assert name_of_citizen_with_phone(scratch_db, "+6281234567003") == "Agus Wijaya"
    assert {t for t in before if changed[t] != before[t]} >= {"citizens", "tickets", "audit_log", "events",
                                                              "otp_challenges", "auth_sessions"}

    started = time.monotonic()
    restored = run_tool(scratch_db, tmp_path, "restore")  # the newest backup
    restore_seconds = time.monotonic() - started
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout and dumps[0].name in restored.stdout
    assert snapshot(scratch_db) == before  # every table, row for row, and every sequence
    assert name_of_citizen_with_phone(scratch_db, "+6281234567003") == "Agus Wijya"
    print(f"backup {dumps[0].stat().st_size} bytes in {backup_seconds:.1f} s, restore in {restore_seconds:.1f} s")

    # The restored database serves again: a login and a ticket numbered as after the backup.
    backend = change_everything(scratch_db, tmp_path)
    tickets = Tickets(backend.repo, wording.domain()).of_account("after-backup")
    backend.db.close()
    assert [t.reference for t in tickets][-1].endswith("000001")


def test_a_damaged_backup_is_refused_and_nothing_changes(scratch_db, tmp_path):
    assert run_tool(scratch_db, tmp_path, "backup").returncode == 0
    good = next((tmp_path / "backups").glob("*.dump"))
    backend = change_everything(scratch_db, tmp_path)
    backend.db.close()
    changed = snapshot(scratch_db)

    damaged = tmp_path / "damaged.dump"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    damaged.write_bytes(bytes(data))
    (tmp_path / "damaged.dump.sha256").write_text(good.with_name(good.name + ".sha256").read_text())
    refused = run_tool(scratch_db, tmp_path, "restore", str(damaged))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "restore failed: damaged.dump does not match its sha256 (damaged.dump.sha256): the file is damaged or not "
        "the one that was backed up; nothing restored"]

    unchecked = tmp_path / "unchecked.dump"
    unchecked.write_bytes(good.read_bytes())  # intact, but without its checksum
    refused = run_tool(scratch_db, tmp_path, "restore", str(unchecked))
    assert refused.returncode == 1 and "unchecked.dump.sha256 is missing" in refused.stderr
    assert snapshot(scratch_db) == changed


def test_restore_refuses_while_the_assistant_is_connected(scratch_db, tmp_path):
    assert run_tool(scratch_db, tmp_path, "backup").returncode == 0
    backend = change_everything(scratch_db, tmp_path)  # its pool stays open, as a running stack's
    try:
        changed = snapshot(scratch_db)
        refused = run_tool(scratch_db, tmp_path, "restore")
        assert refused.returncode == 1
        [line] = refused.stderr.strip().splitlines()
        assert "other connection(s) to the database" in line and "stop the assistant first" in line
        assert snapshot(scratch_db) == changed
    finally:
        backend.db.close()
    assert run_tool(scratch_db, tmp_path, "restore").returncode == 0


def test_restoring_an_older_releases_backup_runs_the_migrations(scratch_db, tmp_path):
    # The backup of a release before 0005: its table and its ledger row absent.
    with psycopg.connect(scratch_db) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE otp_deliveries")
        cur.execute("DELETE FROM schema_migrations WHERE name = '0005_otp_deliveries.sql'")
    conn.close()
    assert run_tool(scratch_db, tmp_path, "backup").returncode == 0
    restored = run_tool(scratch_db, tmp_path, "restore")
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(scratch_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('otp_deliveries') IS NOT NULL,"
                    " EXISTS (SELECT 1 FROM schema_migrations WHERE name = '0005_otp_deliveries.sql')")
        assert cur.fetchone() == (True, True)
    conn.close()


def test_no_backup_to_restore_says_what_to_do(scratch_db, tmp_path):
    refused = run_tool(scratch_db, tmp_path, "restore")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"restore failed: no backup in {tmp_path / 'backups'}: make one with "
                                      "`make backup`, or name the file (FILE=...)")


# --- deploy/: the nightly off-site backup (k8s/backup-cronjob.yaml, k8s/backup/backup.sh) -------

import shutil  # noqa: E402

from backend import privileges  # noqa: E402
from test_security_deploy import _denied, _run, roles_db  # noqa: E402,F401  (roles.psql + migration)
from tools.backup import bin_dir  # noqa: E402

SCRIPT = ROOT / "deploy" / "k8s" / "backup" / "backup.sh"


def run_script(step: str, work: Path, **env: str) -> subprocess.CompletedProcess:
    """backup.sh as the CronJob's containers run it, with PostgreSQL 18's pg_dump on the PATH."""
    path = f"{bin_dir()}:{os.environ['PATH']}"
    return subprocess.run(["sh", str(SCRIPT), step], env={"PATH": path, "HOME": str(work), "BACKUP_WORK_DIR": str(work),
                                                         **env}, capture_output=True, text=True, timeout=300)


def test_the_backup_role_dumps_every_table_and_may_change_nothing(roles_db, tmp_path, monkeypatch):
    import backend.db as db_module
    from backend.db import Database, migrate

    backup_url = roles_db[privileges.BACKUP]
    # The privileges themselves, with the role's read-only default turned off (any session may).
    read_write = make_conninfo(backup_url, options="-c default_transaction_read_only=off")
    for statement in ("UPDATE citizens SET full_name = 'x'", "DELETE FROM audit_log", "INSERT INTO events"
                      " (sender_id, type_name) VALUES ('x', 'user')", "CREATE TABLE intruder (x int)",
                      "TRUNCATE tickets", "SELECT nextval('ticket_number_seq')"):
        assert _denied(read_write, statement), statement
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # and by default every write stops sooner
        _run(backup_url, "UPDATE citizens SET full_name = 'x'")
    assert _run(backup_url, "SELECT count(*) FROM citizens")[0][0] > 0

    # A table a later release adds is readable at once: the migration grants it.
    migrations = tmp_path / "migrations"
    shutil.copytree(db_module.MIGRATIONS_DIR, migrations)
    (migrations / "0999_later.sql").write_text("CREATE TABLE later_table (id serial PRIMARY KEY);")
    monkeypatch.setattr(db_module, "MIGRATIONS_DIR", migrations)
    owner = Database(roles_db[privileges.OWNER])
    try:
        assert migrate(owner) == ["0999_later.sql"]
        work = tmp_path / "work"
        work.mkdir()
        done = run_script("dump", work, DATABASE_URL=backup_url)
        assert done.returncode == 0, done.stderr
    finally:
        _run(roles_db[privileges.OWNER], "DROP TABLE later_table; DELETE FROM schema_migrations"
             " WHERE name = '0999_later.sql'")
        owner.close()
    [dump] = work.glob("*.dump")
    assert dump.stat().st_mode & 0o777 == 0o600
    assert subprocess.run(["sha256sum", "-c", dump.name + ".sha256"], cwd=work, capture_output=True).returncode == 0
    listing = subprocess.run([str(bin_dir() / "pg_restore"), "--list", str(dump)], capture_output=True, text=True).stdout
    data = {line.split()[-2] for line in listing.splitlines() if " TABLE DATA public " in line}
    assert {"citizens", "accounts", "vaccinations", "certificates", "tickets", "audit_log", "later_table"} <= data
    assert "events" not in data and " TABLE public events " in listing  # the table, not the conversations


def test_the_upload_is_encrypted_keeps_30_daily_and_12_monthly_and_restores(roles_db, server_url, tmp_path):
    store = tmp_path / "store"  # the object store: rclone's local backend in place of S3
    password = subprocess.run(["rclone", "obscure", "a-test-password-for-the-backups"], capture_output=True,
                              text=True, check=True).stdout.strip()
    rclone = {"RCLONE_CONFIG": str(tmp_path / "rclone.conf"), "RCLONE_CONFIG_OFFSITE_TYPE": "local",
              "RCLONE_CONFIG_SEALED_TYPE": "crypt", "RCLONE_CONFIG_SEALED_REMOTE": f"offsite:{store}/asisten-vaksin",
              "RCLONE_CONFIG_SEALED_FILENAME_ENCRYPTION": "off",
              "RCLONE_CONFIG_SEALED_DIRECTORY_NAME_ENCRYPTION": "false",
              "RCLONE_CONFIG_SEALED_PASSWORD": password, "BACKUP_REMOTE": "sealed:"}
    env = {"PATH": os.environ["PATH"], **rclone}
    # Earlier nights: 35 daily backups and 13 monthly ones, none of this month.
    old = tmp_path / "old"
    old.write_bytes(b"an earlier backup")
    earlier = [f"2025{m:02d}{d:02d}T180000Z.dump" for m in (10, 11) for d in range(1, 19)][:35]
    for kind, names in (("daily", earlier), ("monthly", [f"2024{m:02d}01T180000Z.dump" for m in range(1, 13)]
                                             + ["20250101T180000Z.dump"])):
        for name in names:
            subprocess.run(["rclone", "copyto", str(old), f"sealed:{kind}/{name}"], env=env, check=True)
    work = tmp_path / "work"
    work.mkdir()
    assert run_script("dump", work, DATABASE_URL=roles_db[privileges.BACKUP]).returncode == 0
    [dump] = work.glob("*.dump")

    uploaded = run_script("upload", work, **rclone)
    assert uploaded.returncode == 0, uploaded.stderr + uploaded.stdout

    def listed(kind):
        return sorted(subprocess.run(["rclone", "lsf", "--include", "*.dump", f"sealed:{kind}/"], env=env,
                                     capture_output=True, text=True, check=True).stdout.split())

    daily, monthly = listed("daily"), listed("monthly")
    assert len(daily) == 30 and daily[-1] == dump.name and daily[0] == sorted(earlier)[6]
    assert len(monthly) == 12 and monthly[-1] == dump.name and monthly[0] == "20240301T180000Z.dump"
    # What lies in the store is sealed: rclone's encrypted format, no pg_dump archive in sight.
    raw = (store / "asisten-vaksin" / "daily" / (dump.name + ".bin")).read_bytes()
    assert raw.startswith(b"RCLONE\x00\x00") and b"PGDMP" not in raw and dump.read_bytes().startswith(b"PGDMP")

    # The restore drill (docs/operations.md): fetched, checked and restored into an empty database.
    fetched = tmp_path / "fetched"
    for suffix in ("", ".sha256"):
        subprocess.run(["rclone", "copyto", f"sealed:daily/{dump.name}{suffix}", f"{fetched}/{dump.name}{suffix}"],
                       env=env, check=True)
    assert subprocess.run(["sha256sum", "-c", dump.name + ".sha256"], cwd=fetched, capture_output=True).returncode == 0
    name = f"vaksin_drill_{os.getpid()}"
    admin = psycopg.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        drill = make_conninfo(server_url, dbname=name)
        restored = subprocess.run([str(bin_dir() / "pg_restore"), "--no-owner", "--no-acl", "--exit-on-error",
                                   "--single-transaction", "--dbname", drill, str(fetched / dump.name)],
                                  capture_output=True, text=True)
        assert restored.returncode == 0, restored.stderr
        count = "SELECT (SELECT count(*) FROM citizens), (SELECT count(*) FROM vaccinations)"
        assert _run(drill, count) == _run(roles_db["superuser"], count)
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def test_deploy_check_finds_a_backup_job_without_the_backup_role(capsys):
    from test_security_deploy import _deploy_check

    check, objects, _, copy = _deploy_check()

    def failures(objs):
        return [name for name, problems in check.backup_problems(objs).items() if problems]

    assert failures(objects) == []
    borrowed = copy(objects)
    dump = check.pod_spec(borrowed, "CronJob", "backup")["initContainers"][0]
    next(e for e in dump["env"] if e["name"] == "DB_USER")["value"] = "vaksin_owner"
    next(e for e in dump["env"] if e["name"] == "DB_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "DB_OWNER_PASSWORD"
    assert failures(borrowed) == ["dumps-as-the-read-only-role"]
    gone = copy(objects)
    del gone[("CronJob", "backup")]
    assert failures(gone) == ["applied-nightly-never-twice", "dumps-as-the-read-only-role",
                              "pg-dump-of-the-servers-version", "uploaded-encrypted",
                              "dump-upload-keep-30-daily-12-monthly"]


def test_the_nightly_dump_restores_with_tools_backup_and_every_role_works_after(roles_db, tmp_path):
    """The Kubernetes restore (docs/operations.md): the backup role's dump put back by
    tools/backup.py as the superuser; owners and grants come back, and so do the services."""
    work = tmp_path / "work"
    work.mkdir()
    assert run_script("dump", work, DATABASE_URL=roles_db[privileges.BACKUP]).returncode == 0
    [dump] = work.glob("*.dump")
    count = "SELECT (SELECT count(*) FROM citizens), (SELECT count(*) FROM audit_log)"
    before = _run(roles_db["superuser"], count)
    _run(roles_db[privileges.OWNER], "DELETE FROM ticket_notes; DELETE FROM tickets; DELETE FROM audit_log")
    _run(roles_db["superuser"], "INSERT INTO events (sender_id, type_name, timestamp, data)"
         " VALUES ('drill', 'user', 1, '{}')")

    restored = run_tool(roles_db["superuser"], tmp_path, "restore", str(dump))
    assert restored.returncode == 0, restored.stderr
    assert _run(roles_db["superuser"], count) == before
    assert _run(roles_db["superuser"], "SELECT count(*) FROM events")[0][0] == 0  # not in the nightly dump
    owners = _run(roles_db["superuser"], "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c"
                  " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")
    assert owners == [(privileges.OWNER,)]
    assert _run(roles_db[privileges.ACTIONS], "SELECT count(*) FROM citizens")[0][0] == before[0][0]
    assert _denied(roles_db[privileges.RASA], "SELECT * FROM citizens")
    assert _run(roles_db[privileges.RASA], "INSERT INTO events (sender_id, type_name) VALUES ('x', 'user')") == 1
    assert _denied(roles_db[privileges.ACTIONS], "CREATE TABLE intruder (x int)")
