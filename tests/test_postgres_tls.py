"""TLS to PostgreSQL as deploy/ sets it (PGSSLMODE=verify-full, PGSSLROOTCERT=the CA of the
Secret postgres-tls): a real PostgreSQL with ssl=on and a certificate made by the commands of
deploy/README.md ("TLS to PostgreSQL"), reached by the backend's pool through libpq's
environment, as every process of the deployment reaches it. The embedded PostgreSQL is built
without TLS, so the server is Debian's (the client, psycopg's libpq, is the deployment's)."""

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend.db import Database, DatabaseUnavailable
from tests.conftest import free_port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _certificates(folder: Path, name: str, *, ca_name: str = "vaksin-postgres-ca") -> None:
    """deploy/README.md's commands, with the test server's name."""
    folder.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "2", "-subj", f"/CN={ca_name}",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    _openssl("req", "-newkey", "ed25519", "-nodes", "-subj", f"/CN={name}", "-keyout", "tls.key", "-out", "tls.csr",
             cwd=folder)
    (folder / "san.ext").write_text(f"subjectAltName=DNS:{name}\n")
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-out", "tls.crt", "-extfile", "san.ext", cwd=folder)


def _server_binaries() -> Path | None:
    """A PostgreSQL server built with TLS: the embedded one is built without it, Debian's has it."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


@contextmanager
def _server(folder: Path, *, certificates: Path | None):
    """PostgreSQL on localhost:<port>, with TLS when given certificates; yields the port."""
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server with TLS (Debian's postgresql package)")
    run_as = {}
    folder.mkdir(mode=0o700)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without the postgres system user to run the server as")
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid}
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data = folder / "data"
    subprocess.run([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=60, **run_as)
    options = ""
    if certificates:
        for name in ("tls.crt", "tls.key"):
            (data / name).write_bytes((certificates / name).read_bytes())
            (data / name).chmod(0o600)  # PostgreSQL refuses a key others may read
            if run_as:
                os.chown(data / name, run_as["user"], run_as["group"])
        with open(data / "postgresql.conf", "a") as conf:  # not -c: a test turns ssl off by a reload
            conf.write("ssl = on\nssl_cert_file = 'tls.crt'\nssl_key_file = 'tls.key'\n")
    port = free_port()
    subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
                    f"-h localhost -p {port} -k {folder}{options}", "start"],
                   check=True, capture_output=True, timeout=60, **run_as)
    try:
        yield port
    finally:
        subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, **run_as)


@pytest.fixture()
def scratch():
    # Not tmp_path: the server's user must reach the folder, and pytest's root folders are 0700.
    folder = Path(tempfile.mkdtemp(prefix="pgtls-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ssl_in_use(host: str, port: int) -> bool:
    db = Database(f"postgresql://postgres@{host}:{port}/postgres", max_connections=1)
    try:
        return db.run(lambda cur: (cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
                                   cur.fetchone()["ssl"])[1])
    finally:
        db.close()


def test_verify_full_connects_only_to_the_server_its_ca_and_name_vouch_for_and_never_in_plain_text(
        scratch, monkeypatch):
    _certificates(scratch / "certs", "localhost")
    _certificates(scratch / "other", "localhost", ca_name="someone-else")
    with _server(scratch / "pg", certificates=scratch / "certs") as port:
        monkeypatch.setenv("PGSSLMODE", "verify-full")
        monkeypatch.setenv("PGSSLROOTCERT", str(scratch / "certs" / "ca.crt"))
        assert _ssl_in_use("localhost", port) is True

        # Another CA (an impostor's certificate, or the wrong Secret): refused.
        monkeypatch.setenv("PGSSLROOTCERT", str(scratch / "other" / "ca.crt"))
        with pytest.raises(DatabaseUnavailable):
            _ssl_in_use("localhost", port)
        # What deploy/ used to set: "prefer" gives up on TLS and goes on in plain text.
        monkeypatch.setenv("PGSSLMODE", "prefer")
        assert _ssl_in_use("localhost", port) is False

        # The right CA, but a name the certificate does not carry (TRACKER_DB_HOST must be in it).
        monkeypatch.setenv("PGSSLMODE", "verify-full")
        monkeypatch.setenv("PGSSLROOTCERT", str(scratch / "certs" / "ca.crt"))
        with pytest.raises(DatabaseUnavailable):
            _ssl_in_use("127.0.0.1", port)

        # A server without TLS (a misconfigured or impostor one): refused, not plain text.
        _sql("localhost", port, "ALTER SYSTEM SET ssl = off", "SELECT pg_reload_conf()")
        _wait_for_ssl_off(port)
        with pytest.raises(DatabaseUnavailable):
            _ssl_in_use("localhost", port)
        monkeypatch.setenv("PGSSLMODE", "prefer")
        assert _ssl_in_use("localhost", port) is False


def _wait_for_ssl_off(port: int) -> None:
    """The postmaster applies a reload asynchronously: wait until new connections see it."""
    import time

    import psycopg

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = psycopg.connect(host="localhost", port=port, user="postgres", dbname="postgres", sslmode="disable")
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW ssl")
                if cur.fetchone()[0] == "off":
                    return
        finally:
            conn.close()
        time.sleep(0.05)
    raise AssertionError("ssl still on 10 s after the reload")


def _sql(host: str, port: int, *statements: str) -> None:
    import psycopg

    conn = psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", sslmode="verify-full")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()
