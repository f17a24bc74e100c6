"""The terminal chat of `make run`: type freely at every prompt, or a button's number.

Rasa's own `rasa shell` turns every set of buttons into an arrow-key menu that ignores typing
until "Type out your own message..." is chosen; a citizen on WhatsApp can always type. This
client talks to the REST channel like any other, shows buttons as a numbered list and sends a
button's payload when its number is typed. `/stop`, Ctrl-C or Ctrl-D end it quietly.

    python -m tools.chat [--url http://127.0.0.1:5005/webhooks/rest/webhook]
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import sys
import urllib.error
import urllib.request

STOP_WORDS = {"/stop", "/exit", "/quit"}
# The client's own words (not the assistant's): what a terminal user needs when the stack is down.
UNREACHABLE = "(the assistant did not answer: {reason}; is `make run` still running?)"


def send(url: str, sender: str, text: str, timeout: float = 30) -> list[dict]:
    body = json.dumps({"sender": sender, "message": text}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        answer = json.loads(reply.read() or b"[]")
    return answer if isinstance(answer, list) else []


def render(messages: list[dict]) -> tuple[list[str], list[dict]]:
    """The lines to print for the assistant's messages, and the buttons a number now picks."""
    lines: list[str] = []
    buttons: list[dict] = []
    for message in messages:
        if message.get("text"):
            first, *rest = str(message["text"]).splitlines() or [""]
            lines.append(f"Asisten: {first}")
            lines += [f"         {line}" for line in rest]
        for key in ("image", "attachment"):
            if isinstance(message.get(key), str):
                lines.append(f"         {message[key]}")
        offered = [b for b in message.get("buttons") or [] if isinstance(b, dict) and b.get("title")]
        if offered:
            buttons = offered  # the newest set of buttons is the one a number answers
            lines.append("         " + "   ".join(f"[{n}] {b['title']}" for n, b in enumerate(offered, 1)))
    return lines, buttons


def to_send(typed: str, buttons: list[dict]) -> str:
    """A button's number sends that button's payload; anything else is sent as typed."""
    if typed.isdigit() and 1 <= int(typed) <= len(buttons):
        return str(buttons[int(typed) - 1].get("payload") or buttons[int(typed) - 1]["title"])
    return typed


def read_line(prompt: str) -> str:
    """input(), except that a Ctrl-C arriving just before the read still stops the chat: a
    signal caught while no Python code runs is handled only at the next line of Python, and
    input() would already be blocked in C, so wait in short steps instead."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    while not select.select([sys.stdin], [], [], 0.2)[0]:
        pass
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def chat(url: str, sender: str, read=read_line, write=print) -> int:
    buttons: list[dict] = []
    while True:
        try:
            typed = read("Anda: ").strip()
        except (EOFError, KeyboardInterrupt):
            write("")
            return 0
        if typed in STOP_WORDS:
            return 0
        if not typed:
            continue
        try:
            lines, offered = render(send(url, sender, to_send(typed, buttons)))
        except KeyboardInterrupt:
            write("")
            return 0
        except (urllib.error.URLError, OSError, ValueError) as exc:
            write(UNREACHABLE.format(reason=getattr(exc, "reason", None) or type(exc).__name__))
            continue
        buttons = offered
        for line in lines:
            write(line)


def new_sender() -> str:
    """A conversation of its own each time, never a phone-number-like id (those are WhatsApp's)."""
    return f"terminal-{secrets.token_hex(6)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:5005/webhooks/rest/webhook")
    args = parser.parse_args(argv)
    return chat(args.url, new_sender())


if __name__ == "__main__":
    sys.exit(main())
