"""The OTP senders of the action server, the process that delivers the codes, chosen by
OTP_SENDER: "outbox" (development: a file), "http" (an SMS gateway) or "whatsapp" (the channel's
authentication template, whatsapp/otp.py). Each is a backend.otp.OtpSender handed to the backend
by actions/backend.py; the backend itself knows none of them."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Callable

import requests

from actions import wording
from backend.otp import CHANGE_PHONE, LOGIN, OtpSender
from backend.settings import Settings

# The SMS of each purpose: a response in domain.yml, as every word a citizen reads.
MESSAGES = {LOGIN: "utter_otp_sms_login", CHANGE_PHONE: "utter_otp_sms_change_phone"}
for _name in MESSAGES.values():
    wording.template(_name)  # a response missing from domain.yml stops the start, not a login


def message(code: str, ttl_seconds: int, purpose: str) -> str:
    return wording.text(MESSAGES[purpose], code=code, minutes=max(1, ttl_seconds // 60))


class OutboxSender:
    """Development delivery: one JSON line per message appended to a file (OTP_OUTBOX)."""

    def __init__(self, path: Path, clock: Callable):
        self.path = Path(path)
        self.clock = clock

    def send(self, to: str, code: str, *, ttl_seconds: int, purpose: str) -> None:
        self.write(to, message(code, ttl_seconds, purpose))

    def write(self, to: str, text: str) -> None:
        line = json.dumps({"to": to, "text": text, "sent_at": self.clock().isoformat()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Codes in clear: the file is the owner's only from its first byte (no chmod after).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            fcntl.flock(out, fcntl.LOCK_EX)  # several processes may append at once
            out.write(line + "\n")


class HttpSmsSender:
    """An SMS gateway taking `POST {url}` with JSON {"to", "text"} and a bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 5.0):
        self.url = url
        self.token = token
        self.timeout = timeout

    def send(self, to: str, code: str, *, ttl_seconds: int, purpose: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = requests.post(self.url, json={"to": to, "text": message(code, ttl_seconds, purpose)},
                                 headers=headers, timeout=self.timeout)
        response.raise_for_status()


def make_otp_sender(settings: Settings, clock: Callable) -> OtpSender:
    """The sender OTP_SENDER names; a missing setting or an unknown name stops the start."""
    if settings.otp_sender == "outbox":
        return OutboxSender(settings.otp_outbox, clock)
    if settings.otp_sender == "http":
        if not settings.sms_gateway_url:
            raise ValueError("OTP_SENDER=http needs SMS_GATEWAY_URL")
        return HttpSmsSender(settings.sms_gateway_url, settings.sms_gateway_token)
    if settings.otp_sender == "whatsapp":
        from whatsapp.otp import WhatsAppOtpSender  # the channel's package, only when chosen

        return WhatsAppOtpSender.from_env(dict(settings.whatsapp_env))
    raise ValueError(f"unknown OTP_SENDER {settings.otp_sender!r} (outbox, http or whatsapp)")
