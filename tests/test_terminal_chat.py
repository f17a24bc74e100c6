"""`make run`'s screen and chat, in a real terminal (a pty): the stack comes up in a few lines,
text can be typed at every prompt, a button's number sends its payload, and one Ctrl-C stops
everything quietly."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import time

import pytest

from conftest import free_port
from tools.chat import render, to_send
from tools.stack import MODEL, ROOT

MENU = [{"title": "Download Sertifikat", "payload": "/download_certificate"},
        {"title": "Status Vaksinasi", "payload": "/check_vaccination_status"}]


def test_buttons_are_numbered_and_a_number_sends_the_payload():
    lines, buttons = render([{"text": "Halo!\nPilih menu:", "buttons": MENU}, {"text": "Atau ketik saja."}])
    assert lines == ["Asisten: Halo!", "         Pilih menu:",
                     "         [1] Download Sertifikat   [2] Status Vaksinasi", "Asisten: Atau ketik saja."]
    assert buttons == MENU
    assert to_send("2", buttons) == "/check_vaccination_status"
    # Text, and numbers that are no button (a person's number, a code), go as typed.
    assert to_send("gmn cara download sertif", buttons) == "gmn cara download sertif"
    assert to_send("3", buttons) == "3" and to_send("0", buttons) == "0"
    assert to_send("482913", buttons) == "482913" and to_send("1", []) == "1"


class Terminal:
    """A process on a pty: what it printed, and keys typed into it."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.fd, child = pty.openpty()
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=child, stdout=child, stderr=child,
                                        preexec_fn=self._controlling_terminal)
        os.close(child)
        self.screen = ""

    @staticmethod
    def _controlling_terminal() -> None:
        """The pty becomes the process's terminal, so Ctrl-C typed there sends it SIGINT."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def read_until(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen}")
            if select.select([self.fd], [], [], min(left, 1))[0]:
                try:
                    self.screen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:  # the process ended
                    raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen}") from None
        return self.screen

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")
def test_make_run_screen_chat_and_one_ctrl_c_stop_everything(database_url, tmp_path):
    rasa_port, action_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "RASA_PORT": str(rasa_port),
           "ACTION_SERVER_PORT": str(action_port), "VAR_DIR": str(tmp_path),
           "OTP_OUTBOX": str(tmp_path / "outbox.jsonl"), "OTP_HASH_KEY": "terminal-test-key",
           "PYTHONWARNINGS": "always"}  # every warning a library raises would show, if any reached the screen
    terminal = Terminal([sys.executable, "-m", "tools.stack", "run"], env)
    try:
        terminal.read_until("Anda: ", timeout=240)
        terminal.type("halo\r")
        screen = terminal.read_until("[1] Download Sertifikat", timeout=60)
        terminal.read_until("Anda: ", timeout=5)
        # Free text right after the buttons, as the README's transcript does it.
        terminal.type("gmn cara download sertif vaksin\r")
        screen = terminal.read_until("nomor HP yang terdaftar", timeout=60)
        terminal.type("\x03")  # Ctrl-C, as the terminal sends it
        screen = terminal.read_until("[stack] stopped", timeout=90)
        assert terminal.process.wait(timeout=10) == 0, screen
    finally:
        if terminal.process.poll() is None:  # SIGTERM: the stack stops what it started
            terminal.process.terminate()
            try:
                terminal.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(terminal.process.pid, signal.SIGKILL)
        os.close(terminal.fd)
    assert not listening(rasa_port) and not listening(action_port), "Ctrl-C left a server running"
    # The stack's own few lines, then the chat: no warnings, no tracebacks, no Rasa log lines.
    before_chat = screen[:screen.index("Anda: ")]
    assert [line for line in before_chat.splitlines() if line.strip()] == [
        line for line in before_chat.splitlines() if line.startswith("[stack] ")]
    assert len(before_chat.splitlines()) <= 6
    assert "Traceback" not in screen and "Warning" not in screen and "WARNING" not in screen
    assert (tmp_path / "log" / "rasa.log").exists()  # where the logs went instead
