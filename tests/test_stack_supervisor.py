"""`make serve` keeps serving: each of its processes killed with SIGKILL in turn (action server,
Rasa, the embedded PostgreSQL's postmaster, Redis with WORKERS=2) is restarted by tools/stack.py,
the REST channel answers meanwhile (the apology allowed) and normally again soon after, and one
SIGINT still stops everything, leaving no process behind.

One stack (`python -m tools.stack serve`, as `make serve` starts it, with its own embedded
PostgreSQL under a temporary VAR_DIR) is shared by all the kills to keep the run short.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from conftest import free_port
from rest.channel import APOLOGY
from tools.stack import MODEL, ROOT

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")

HAVE_REDIS = shutil.which("redis-server") is not None


class Served:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.rasa_port, self.action_port, self.redis_port = free_port(), free_port(), free_port()
        self.workers = 2 if HAVE_REDIS else 1
        env = {**os.environ, "RASA_PORT": str(self.rasa_port), "ACTION_SERVER_PORT": str(self.action_port),
               "REDIS_PORT": str(self.redis_port), "WORKERS": str(self.workers), "VAR_DIR": str(tmp),
               "OTP_OUTBOX": str(tmp / "outbox.jsonl"), "OTP_HASH_KEY": "supervisor-test-key",
               "LOG_LEVEL": "INFO"}
        # The embedded PostgreSQL under VAR_DIR: the one the stack starts, and so supervises.
        for name in ("DATABASE_URL", "REDIS_HOST"):
            env.pop(name, None)
        self.out = tmp / "stack.out"
        with open(self.out, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "tools.stack", "serve"], cwd=ROOT, env=env,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.rasa_port}/webhooks/rest/webhook"

    def screen(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            assert self.process.poll() is None, f"the stack ended:\n{self.screen()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the stack's output:\n{self.screen()}")
            time.sleep(0.2)

    def child(self, word: str) -> psutil.Process:
        [found] = [p for p in psutil.Process(self.process.pid).children()
                   if any(word in part for part in p.cmdline())]
        return found

    def postmaster(self) -> psutil.Process:
        return psutil.Process(int((self.tmp / "pgdata" / "postmaster.pid").read_text().split()[0]))

    def every_pid(self) -> set[int]:
        """The stack, what it started, their process groups and the postmaster's family."""
        top = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(), self.postmaster()]
        pids = set()
        for process in top:
            pids |= {process.pid} | {p.pid for p in process.children(recursive=True)}
        groups = {os.getpgid(pid) for pid in pids if psutil.pid_exists(pid)}
        pids |= {p.pid for p in psutil.process_iter() if _pgid(p.pid) in groups}
        return pids

    def turn(self, sender: str, text: str, timeout: float = 30) -> list[dict] | None:
        """Rasa's answer; None when Rasa itself does not answer (it is the one restarting)."""
        try:
            reply = requests.post(self.url, json={"sender": sender, "message": text}, timeout=timeout)
        except requests.ConnectionError:
            return None
        assert reply.status_code == 200, reply.text
        return reply.json()

    def normal_flow(self) -> bool:
        """A flow that needs the action server and the database: the status menu, then a phone
        number (an unregistered one gets the same reply: no OTP limit is reached across runs)."""
        sender = f"sup-{uuid.uuid4().hex[:12]}"
        first = self.turn(sender, "status vaksinasi")
        if not first or "nomor HP" not in texts(first):
            return False
        phone = f"0812{random.randrange(10**7, 10**8)}"
        second = self.turn(sender, phone)
        return bool(second) and "kode OTP" in texts(second) and APOLOGY not in texts(second)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def texts(messages: list[dict]) -> str:
    return "\n".join(m.get("text") or "" for m in messages)


@pytest.fixture(scope="module")
def served():
    # VAR_DIR under var/, as the session's database: the embedded PostgreSQL runs as another user
    # when tests run as root, and pytest makes its temporary folders private whenever a session
    # starts (another one, in parallel, would lock the restarted server out).
    var = ROOT / "var" / f"test-supervisor-{uuid.uuid4().hex[:8]}"
    var.mkdir(parents=True)
    running = Served(var)
    try:
        running.wait_for_line("everything up", timeout=300)
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
            try:
                running.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(running.process.pid, signal.SIGKILL)
        print(running.screen())
        from backend import embedded

        embedded.stop(var / "pgdata")  # already stopped by the stack, unless the test broke it
        shutil.rmtree(var, ignore_errors=True)


VICTIMS = [
    # name in the stack's log, how to find its process, seconds until answers are normal again
    ("actions", lambda s: s.child("actions.server"), 60),
    ("rasa", lambda s: s.child("rasa_server"), 240),
    ("postgres", lambda s: s.postmaster(), 60),
    ("redis", lambda s: s.child("redis-server"), 60),
]


@pytest.mark.parametrize("name, find, recovery", VICTIMS, ids=[v[0] for v in VICTIMS])
def test_a_killed_process_is_restarted_and_the_stack_keeps_answering(served, name, find, recovery):
    if name == "redis" and not HAVE_REDIS:
        pytest.skip("redis-server is not installed: the stack runs one worker without Redis")
    assert served.normal_flow(), served.screen()
    victim = find(served)
    pid = victim.pid
    victim.kill()
    killed_at = time.monotonic()
    status = "is gone (not our child" if name == "postgres" else "was killed by SIGKILL;"
    served.wait_for_line(f"{name} (pid {pid}) {status}", timeout=10)

    # Meanwhile every turn Rasa takes is answered, if only with the apology; then normally again.
    answered, apologies = 0, 0
    deadline = killed_at + recovery
    while True:
        reply = served.turn(f"sup-{uuid.uuid4().hex[:12]}", "halo")
        if reply is not None:
            assert reply, f"a turn without any answer while {name} was down"
            answered += 1
            apologies += APOLOGY in texts(reply)
        if served.normal_flow():
            break
        assert time.monotonic() < deadline, f"not normal {recovery} s after killing {name}:\n{served.screen()}"
        time.sleep(0.5)
    print(f"{name}: normal again {time.monotonic() - killed_at:.1f} s after the kill "
          f"({answered} turns answered meanwhile, {apologies} with the apology)")
    served.wait_for_line(f"{name} restarted", timeout=5)
    assert served.process.poll() is None
    if name != "postgres":
        assert find(served).pid != pid


def test_sigint_stops_everything_promptly_and_leaves_no_process(served):
    pids = served.every_pid()
    assert len(pids) >= 4 + (1 if HAVE_REDIS else 0), pids
    started = time.monotonic()
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(30) == 0, served.screen()
    deadline = time.monotonic() + 10
    while [pid for pid in pids if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    took = time.monotonic() - started
    left = {pid: psutil.Process(pid).cmdline() for pid in pids if _alive(pid)}
    assert not left, f"left running after SIGINT: {left}"
    print(f"SIGINT: all {len(pids)} processes gone in {took:.1f} s")
    assert "[stack] stopped" in served.screen()
    assert "Traceback" not in served.screen()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
