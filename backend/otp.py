"""One-time codes: issuing with rate limits, delivery through a pluggable sender, verification.

The rules are those of shared/product.md: codes from a CSPRNG, stored only as an HMAC keyed
by a secret outside the database, valid OTP_TTL_SECONDS, single use, void after
OTP_MAX_ATTEMPTS wrong tries, resend after OTP_RESEND_SECONDS, at most OTP_MAX_SENDS_PER_HOUR
per phone (and per conversation) and OTP_MAX_SENDS_PER_MINUTE in all. An unregistered number
gets a challenge row like any other (so limits and replies are identical) whose hash no code
can match, and nothing is sent to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Protocol

import requests

from .identifiers import mask_phone
from .repository import Repository

log = logging.getLogger(__name__)

LOGIN = "login"
CHANGE_PHONE = "change_phone"

MESSAGES = {
    LOGIN: "Kode verifikasi Asisten Sertifikat Vaksin: {code}. Berlaku {minutes} menit. "
           "JANGAN berikan kode ini kepada siapa pun, termasuk petugas.",
    CHANGE_PHONE: "Kode untuk menjadikan nomor ini nomor HP akun Asisten Sertifikat Vaksin: {code}. "
                  "Berlaku {minutes} menit. Abaikan jika Anda tidak memintanya.",
}


class OtpSender(Protocol):
    # A sender whose text is fixed elsewhere (WhatsApp's authentication template) may define
    # send_code(phone, code) instead; OtpService then gives it only the code.
    def send(self, phone: str, text: str) -> None: ...


class OutboxSender:
    """Development delivery: one JSON line per message appended to a file (OTP_OUTBOX)."""

    def __init__(self, path: Path, clock: Callable):
        self.path = Path(path)
        self.clock = clock

    def send(self, phone: str, text: str) -> None:
        line = json.dumps({"to": phone, "text": text, "sent_at": self.clock().isoformat()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as out:
            fcntl.flock(out, fcntl.LOCK_EX)  # several processes may append at once
            out.write(line + "\n")


class HttpSmsSender:
    """An SMS gateway taking `POST {url}` with JSON {"to", "text"} and a bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 5.0):
        self.url = url
        self.token = token
        self.timeout = timeout

    def send(self, phone: str, text: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = requests.post(self.url, json={"to": phone, "text": text},
                                 headers=headers, timeout=self.timeout)
        response.raise_for_status()


def make_sender(settings, clock) -> OtpSender:
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


@dataclass(frozen=True)
class Issued:
    """status: "sent" (also for unknown numbers), "too_soon", "rate_limited" or "busy"."""
    status: str
    masked_phone: str
    retry_after: int = 0


@dataclass(frozen=True)
class Checked:
    """status: "ok", "wrong", "void" (too many tries), "expired" or "none" (no open code)."""
    status: str
    attempts_left: int = 0


class OtpService:
    def __init__(self, repo: Repository, sender: OtpSender):
        self.repo = repo
        self.db = repo.db
        self.settings = repo.settings
        self.clock = repo.clock
        self.sender = sender

    def _hash(self, purpose: str, phone: str, code: str) -> bytes:
        message = f"{purpose}:{phone}:{code}".encode()
        return hmac.new(self.settings.otp_hash_key, message, hashlib.sha256).digest()

    def request(self, conversation_id: str, phone: str, purpose: str = LOGIN) -> Issued:
        """Issue a code for phone (E.164) and send it if the number may receive one."""
        s = self.settings
        masked = mask_phone(phone)

        def fn(cur):
            # One issuer per phone at a time, across processes.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (phone,))
            now = self.clock()
            hour_ago = now - timedelta(hours=1)
            cur.execute("SELECT count(*) AS n FROM otp_challenges WHERE created_at > %s",
                        (now - timedelta(minutes=1),))
            if cur.fetchone()["n"] >= s.otp_max_sends_per_minute:
                return Issued("busy", masked, 60), None
            cur.execute(
                "SELECT count(*) AS n, min(created_at) AS first, max(created_at) AS last"
                " FROM otp_challenges WHERE phone = %s AND created_at > %s", (phone, hour_ago))
            by_phone = cur.fetchone()
            cur.execute(
                "SELECT count(*) AS n, min(created_at) AS first FROM otp_challenges"
                " WHERE conversation_id = %s AND created_at > %s", (conversation_id, hour_ago))
            by_conversation = cur.fetchone()
            for window in (by_phone, by_conversation):
                if window["n"] >= s.otp_max_sends_per_hour:
                    wait = (window["first"] + timedelta(hours=1) - now).total_seconds()
                    return Issued("rate_limited", masked, max(1, int(wait) + 1)), None
            if by_phone["last"] is not None:
                since = (now - by_phone["last"]).total_seconds()
                if since < s.otp_resend_seconds:
                    return Issued("too_soon", masked, max(1, int(s.otp_resend_seconds - since + 0.999))), None

            if purpose == LOGIN:
                cur.execute("SELECT 1 FROM accounts WHERE phone = %s", (phone,))
                deliver = cur.fetchone() is not None
            else:
                deliver = True  # the new number of a verified citizen, checked by the caller
            code = f"{secrets.randbelow(1_000_000):06d}"
            code_hash = self._hash(purpose, phone, code) if deliver else secrets.token_bytes(32)
            cur.execute(
                "UPDATE otp_challenges SET voided_at = %s WHERE conversation_id = %s"
                " AND purpose = %s AND consumed_at IS NULL AND voided_at IS NULL",
                (now, conversation_id, purpose))
            cur.execute(
                "INSERT INTO otp_challenges (conversation_id, phone, purpose, code_hash, delivered,"
                " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (conversation_id, phone, purpose, code_hash, deliver, now,
                 now + timedelta(seconds=s.otp_ttl_seconds)))
            return Issued("sent", masked), (code if deliver else None)

        issued, code = self.db.run(fn)
        if code is not None:
            text = MESSAGES[purpose].format(code=code, minutes=max(1, s.otp_ttl_seconds // 60))
            try:
                send_code = getattr(self.sender, "send_code", None)
                if send_code is not None:
                    send_code(phone, code)
                else:
                    self.sender.send(phone, text)
            except Exception as exc:  # the citizen can ask for a resend; never say more than usual
                log.warning("OTP delivery to %s failed: %s", masked, type(exc).__name__)
        return issued

    def pending_phone(self, conversation_id: str, purpose: str = LOGIN) -> str | None:
        """The number of the conversation's latest open code, for "kirim ulang"."""

        def fn(cur):
            cur.execute(
                "SELECT phone FROM otp_challenges WHERE conversation_id = %s AND purpose = %s"
                " ORDER BY created_at DESC, id DESC LIMIT 1", (conversation_id, purpose))
            row = cur.fetchone()
            return row["phone"] if row else None

        return self.db.run(fn)

    def verify(self, conversation_id: str, code: str, purpose: str = LOGIN,
               on_success: Callable | None = None) -> Checked:
        """Check code against the conversation's latest code for purpose.

        On success, in the same transaction: a login starts the verified session; other
        purposes run on_success(cur, phone), so a change is applied whole or not at all.
        """
        s = self.settings

        def fn(cur):
            now = self.clock()
            cur.execute(
                "SELECT * FROM otp_challenges WHERE conversation_id = %s AND purpose = %s"
                " ORDER BY created_at DESC, id DESC LIMIT 1 FOR UPDATE",
                (conversation_id, purpose))
            challenge = cur.fetchone()
            if challenge is None or challenge["consumed_at"] is not None:
                return Checked("none")
            if challenge["voided_at"] is not None:
                return Checked("void")
            if challenge["expires_at"] <= now:
                return Checked("expired")
            expected = bytes(challenge["code_hash"])
            if hmac.compare_digest(expected, self._hash(purpose, challenge["phone"], code)):
                cur.execute("UPDATE otp_challenges SET consumed_at = %s WHERE id = %s",
                            (now, challenge["id"]))
                if purpose == LOGIN:
                    cur.execute("SELECT id FROM accounts WHERE phone = %s", (challenge["phone"],))
                    account = cur.fetchone()
                    if account is None:  # the number was moved away meanwhile
                        return Checked("none")
                    self.repo.start_session(cur, conversation_id, account["id"])
                elif on_success is not None:
                    on_success(cur, challenge["phone"])
                return Checked("ok")
            attempts = challenge["attempts"] + 1
            void = attempts >= s.otp_max_attempts
            cur.execute("UPDATE otp_challenges SET attempts = %s, voided_at = %s WHERE id = %s",
                        (attempts, now if void else None, challenge["id"]))
            return Checked("void") if void else Checked("wrong", s.otp_max_attempts - attempts)

        return self.db.run(fn)
