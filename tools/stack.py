"""Starts the whole assistant on this machine: PostgreSQL, the action server, Rasa.

    python -m tools.stack serve   # REST channel on 5005, action server on 5055, until Ctrl-C
    WORKERS=2 python -m tools.stack serve   # two Rasa workers sharing a Redis lock store
    python -m tools.stack run     # the same with a chat in this terminal (tools/chat.py)
    python -m tools.stack db      # just the database: migrate, seed, print the URL, wait

With DATABASE_URL set, that server is used; otherwise an embedded PostgreSQL under
var/pgdata. Ctrl-C (or SIGTERM) stops everything this command started.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2.extensions

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MODEL = ROOT / "models" / "current.tar.gz"


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def database_url(var_dir: Path) -> str:
    """DATABASE_URL, or the embedded server's URL (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from backend import embedded

    log(f"no DATABASE_URL: using the embedded PostgreSQL in {var_dir / 'pgdata'}")
    return embedded.start(var_dir / "pgdata")


def prepare_database(url: str) -> None:
    from backend import Backend

    backend = Backend.create(dsn=url)
    backend.prepare()
    backend.db.close()


def tracker_env(url: str) -> dict[str, str]:
    """Rasa's SQL tracker store takes host/port/db/user/password, not a URL (endpoints.yml)."""
    parts = psycopg2.extensions.parse_dsn(url)
    return {
        "TRACKER_DB_HOST": parts.get("host", "localhost"),  # a directory means a Unix socket
        "TRACKER_DB_PORT": parts.get("port", "5432"),
        "TRACKER_DB_NAME": parts.get("dbname", "postgres"),
        "TRACKER_DB_USER": parts.get("user", "postgres"),
        "TRACKER_DB_PASSWORD": parts.get("password", ""),
    }


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # a Redis, with or without AUTH
    except OSError:
        return False


@dataclass
class Stack:
    """The processes of one running assistant; usable from tests with other ports and paths."""
    database_url: str
    rasa_port: int = 5005
    action_port: int = 5055
    model: Path = MODEL
    log_dir: Path = ROOT / "var" / "log"
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    redis_port: int = 6379
    lock_store: str = ""  # "in_memory" or "redis"; by default redis when workers > 1
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        from backend.settings import Settings

        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(tracker_env(self.database_url))
        env.update({
            # Both processes must hold the same token: read (or create) it once, here.
            "ACTION_SERVER_TOKEN": Settings.from_env(env).action_server_token,
            "DATABASE_URL": self.database_url,
            "ACTION_SERVER_PORT": str(self.action_port),
            "ACTION_ENDPOINT_URL": f"http://127.0.0.1:{self.action_port}/webhook",
            "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL") or f"http://localhost:{self.action_port}",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT),
            # One Rasa process needs no lock store beyond memory; several share one in Redis
            # so that two messages of one citizen are never processed at the same time.
            "SANIC_WORKERS": str(self.workers),
            # Webhook bodies are small; anything over 1 MB is refused (413) before parsing.
            "SANIC_REQUEST_MAX_SIZE": env.get("SANIC_REQUEST_MAX_SIZE") or "1048576",
            "LOCK_STORE_TYPE": self.lock_store_type,
            "REDIS_HOST": env.get("REDIS_HOST") or "127.0.0.1",
            "REDIS_PORT": env.get("REDIS_PORT") or str(self.redis_port),
            "REDIS_DB": env.get("REDIS_DB") or "0",
            "REDIS_PASSWORD": env.get("REDIS_PASSWORD", ""),
            "REDIS_TLS": env.get("REDIS_TLS") or "false",
            "REDIS_CA_FILE": env.get("REDIS_CA_FILE", ""),
        })
        return env

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A session of its own: the terminal's Ctrl-C reaches only this process, which stops them.
        with open(self.log_dir / f"{name}.log", "ab") as out:
            process = subprocess.Popen(args, cwd=ROOT, env=self.env(), stdout=out, stderr=out,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    @property
    def lock_store_type(self) -> str:
        return self.lock_store or ("redis" if self.workers > 1 else "in_memory")

    def start_redis(self, timeout: float = 10) -> None:
        """A Redis for the lock store, unless REDIS_HOST points at one or one answers already;
        with REDIS_PASSWORD set, it requires that password."""
        if os.environ.get("REDIS_HOST") or redis_answers(self.redis_port):
            return
        data = self.log_dir.parent / "redis"
        data.mkdir(parents=True, exist_ok=True)
        password = self.env()["REDIS_PASSWORD"]
        process = self._start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no", "--dir", str(data)]
                              + (["--requirepass", password] if password else []))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("redis-server exited; is it installed (apt-get install redis-server)?")
            if redis_answers(self.redis_port):
                log(f"Redis ready on 127.0.0.1:{self.redis_port} (lock store)")
                return
            time.sleep(0.2)
        raise TimeoutError("redis-server did not answer")

    def start_actions(self, timeout: float = 60) -> None:
        process = self._start("actions", [str(VENV_BIN / "python"), "-m", "actions.server"])
        wait_http(f"http://127.0.0.1:{self.action_port}/health", timeout, process)
        log(f"action server ready on 127.0.0.1:{self.action_port}")

    def rasa_args(self, command: str) -> list[str]:
        # rasa_server: `rasa` with the speed patches RASA_PATCHES selects (rasa_server/patches/).
        return [str(VENV_BIN / "python"), "-m", "rasa_server", command, "--model", str(self.model),
                "--endpoints", "endpoints.yml", "--credentials", "credentials.yml",
                "--logging-config-file", "logging.yml", "--port", str(self.rasa_port)]

    def stop_actions(self) -> None:
        """Stop only the action server (fault tests); start_actions() brings it back."""
        self._stop_only(lambda args: args[-1] == "actions.server")

    def stop_redis(self) -> None:
        """Stop only the Redis this stack started (fault tests); start_redis() brings it back."""
        self._stop_only(lambda args: args[0] == "redis-server")

    def _stop_only(self, chosen) -> None:
        for process in [p for p in self.processes if chosen(p.args)]:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
            self.processes.remove(process)

    def start_rasa(self, timeout: float = 180) -> None:
        if self.lock_store_type == "redis":
            self.start_redis()
        process = self._start("rasa", self.rasa_args("run") + ["--interface", "127.0.0.1"])
        wait_http(f"http://127.0.0.1:{self.rasa_port}/", timeout, process)
        log(f"Rasa ready: REST channel at http://127.0.0.1:{self.rasa_port}/webhooks/rest/webhook")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()


def quiet_warnings(path: Path) -> None:
    """Libraries' warnings (deprecations, platformdirs) go to a log file, not the chat's screen."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    logging.captureWarnings(True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.addHandler(handler)
    warnings_log.propagate = False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["serve", "run", "db"])
    args = parser.parse_args()

    # Ctrl-C and SIGTERM both end up in the finally block below (explicitly for SIGINT too:
    # a shell starts background jobs with it ignored).
    def interrupt(*_):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    var_dir = Path(os.environ.get("VAR_DIR") or ROOT / "var")
    quiet_warnings(var_dir / "log" / "stack.log")
    url = database_url(var_dir)
    prepare_database(url)
    if args.command == "db":
        log(f"database ready: {url}")
    elif not MODEL.exists():
        log(f"no model at {MODEL}: run `make train` first")
        return 1

    stack = Stack(url, rasa_port=int(os.environ.get("RASA_PORT", 5005)),
                  action_port=int(os.environ.get("ACTION_SERVER_PORT", 5055)),
                  workers=int(os.environ.get("WORKERS") or 1),
                  redis_port=int(os.environ.get("REDIS_PORT") or 6379), log_dir=var_dir / "log")
    started = time.monotonic()
    try:
        if args.command == "db":
            signal.pause()
        stack.start_actions()
        stack.start_rasa()
        log(f"everything up in {time.monotonic() - started:.1f} s; logs in {stack.log_dir}; Ctrl-C stops")
        if args.command == "run":
            from tools import chat

            log("chat: type freely, or a button's number; /stop or Ctrl-C ends everything")
            return chat.chat(f"http://127.0.0.1:{stack.rasa_port}/webhooks/rest/webhook",
                             chat.new_sender())
        while all(p.poll() is None for p in stack.processes):
            time.sleep(1)
        log("a process exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
        log("stopped")


if __name__ == "__main__":
    sys.exit(main())
