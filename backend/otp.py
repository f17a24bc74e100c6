"""One-time codes: issuing with rate limits, delivery through a pluggable sender, verification.

The rules are those of shared/product.md: codes from a CSPRNG, stored only as an HMAC keyed
by a secret outside the database, valid OTP_TTL_SECONDS, single use, void after
OTP_MAX_ATTEMPTS wrong tries, resend after OTP_RESEND_SECONDS, at most OTP_MAX_SENDS_PER_HOUR
per phone (and per conversation) and OTP_MAX_SENDS_PER_MINUTE in all. An unregistered number
gets a challenge row like any other (so limits and replies are identical) whose hash no code
can match, and nothing is sent to it.

Delivery does not happen in the citizen's turn: a code to send is queued in otp_deliveries
(sealed with AES-GCM under a key derived from OTP_HASH_KEY) in the transaction that issues it,
and a DeliveryWorker in every action-server process sends it, retrying with backoff until the
code expires. So the reply takes as long for a registered number as for an unknown one, and a
slow or failing gateway neither delays it nor loses the code.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .events import events
from .identifiers import mask_phone
from .repository import ChangeRejected, Repository

log = logging.getLogger(__name__)

LOGIN = "login"
CHANGE_PHONE = "change_phone"

# A process that claimed a delivery has this long to send it before another may try (longer
# than any sender's own timeout and retries); a failed send waits base * 2^n, at most the cap.
DELIVERY_LEASE_SECONDS = 60
RETRY_CAP_SECONDS = 60
# Issued.status of a refused request -> the limit that refused it (as counted in metrics).
REFUSED_BY = {"rate_limited": "per_hour", "too_soon": "resend_wait", "busy": "global_per_minute"}


class OtpSender(Protocol):
    """How a code reaches a phone. The backend defines it; the assembling code picks one by
    OTP_SENDER (actions/senders.py) and hands it to Backend.create. purpose is LOGIN or
    CHANGE_PHONE; ttl_seconds is how long the code stays valid."""

    def send(self, to: str, code: str, *, ttl_seconds: int, purpose: str) -> None: ...


class NoSender:
    """For processes that only issue codes (tools, jobs): delivery is the action server's."""

    def send(self, to: str, code: str, *, ttl_seconds: int, purpose: str) -> None:
        raise RuntimeError("no OTP sender in this process: codes are delivered by the action server")


@dataclass(frozen=True)
class Issued:
    """status: "sent" (also for unknown numbers), "too_soon", "rate_limited" or "busy"."""
    status: str
    masked_phone: str
    retry_after: int = 0


@dataclass(frozen=True)
class Checked:
    """status: "ok", "wrong", "void" (too many tries), "expired", "none" (no open code) or
    "rejected" (right code, but on_success refused the change: the code is used up, nothing
    else changed)."""
    status: str
    attempts_left: int = 0


class OtpService:
    def __init__(self, repo: Repository, sender: OtpSender | None = None):
        self.repo = repo
        self.db = repo.db
        self.settings = repo.settings
        self.clock = repo.clock
        self.sender: OtpSender = sender or NoSender()
        # A key of its own for the queue, derived from OTP_HASH_KEY (not in the database).
        self._queue_key = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                      info=b"otp-delivery-queue v1").derive(self.settings.otp_hash_key))
        # Called after a code was queued: the DeliveryWorker of this process wakes up at once.
        self.on_queued: Callable[[], None] | None = None

    def _hash(self, purpose: str, phone: str, code: str) -> bytes:
        message = f"{purpose}:{phone}:{code}".encode()
        return hmac.new(self.settings.otp_hash_key, message, hashlib.sha256).digest()

    @staticmethod
    def _aad(challenge_id: int, purpose: str, phone: str) -> bytes:
        # Binds the sealed code to its row: swapping ciphertexts between rows fails to open.
        return f"{challenge_id}:{purpose}:{phone}".encode()

    def _seal(self, challenge_id: int, purpose: str, phone: str, code: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._queue_key.encrypt(nonce, code.encode(), self._aad(challenge_id, purpose, phone))

    def _open(self, row) -> str:
        sealed = bytes(row["sealed_code"])
        aad = self._aad(row["challenge_id"], row["purpose"], row["phone"])
        return self._queue_key.decrypt(sealed[:12], sealed[12:], aad).decode()

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
            # Per conversation, each purpose has its own budget: a verified citizen may try
            # as many new numbers as logins; per phone every code counts.
            cur.execute(
                "SELECT count(*) AS n, min(created_at) AS first FROM otp_challenges"
                " WHERE conversation_id = %s AND purpose = %s AND created_at > %s",
                (conversation_id, purpose, hour_ago))
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
                # A new number for a verified account, whoever holds it: the code is the proof
                # that the citizen holds it; whether it is free is checked only after the code.
                deliver = True
            code = f"{secrets.randbelow(1_000_000):06d}"
            code_hash = self._hash(purpose, phone, code) if deliver else secrets.token_bytes(32)
            cur.execute(
                "UPDATE otp_challenges SET voided_at = %s WHERE conversation_id = %s"
                " AND purpose = %s AND consumed_at IS NULL AND voided_at IS NULL",
                (now, conversation_id, purpose))
            # The conversation's older codes for this purpose are void: not worth an SMS any more.
            cur.execute(
                "DELETE FROM otp_deliveries WHERE challenge_id IN (SELECT id FROM otp_challenges"
                " WHERE conversation_id = %s AND purpose = %s)", (conversation_id, purpose))
            expires = now + timedelta(seconds=s.otp_ttl_seconds)
            cur.execute(
                "INSERT INTO otp_challenges (conversation_id, phone, purpose, code_hash, delivered,"
                " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (conversation_id, phone, purpose, code_hash, deliver, now, expires))
            challenge_id = cur.fetchone()["id"]
            if deliver:
                cur.execute(
                    "INSERT INTO otp_deliveries (challenge_id, phone, purpose, sealed_code,"
                    " next_attempt_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (challenge_id, phone, purpose, self._seal(challenge_id, purpose, phone, code),
                     now, expires))
            return Issued("sent", masked), deliver

        issued, queued = self.db.run(fn)
        if issued.status in REFUSED_BY:
            events().otp_refused(REFUSED_BY[issued.status])
        if queued and self.on_queued is not None:
            self.on_queued()
        return issued

    # --- delivery -----------------------------------------------------------------------------

    def deliver_due(self, limit: int = 10) -> int:
        """Send up to limit queued codes that are due; returns how many were tried.

        Each is claimed for DELIVERY_LEASE_SECONDS (FOR UPDATE SKIP LOCKED: two processes never
        claim the same one), sent outside any transaction, then deleted, or on failure put back
        for a later try. Codes past their expiry are dropped unsent.
        """
        rows = self.db.run(self._claim, limit)
        for row in rows:
            self._deliver(row)
        return len(rows)

    def drain(self) -> int:
        """Deliver everything due now, in this thread (tests; a worker does it in production)."""
        total = 0
        while (tried := self.deliver_due()):
            total += tried
        return total

    def _claim(self, cur, limit: int) -> list:
        now = self.clock()
        cur.execute("DELETE FROM otp_deliveries WHERE expires_at <= %s RETURNING phone, attempts", (now,))
        for row in cur.fetchall():
            log.warning("OTP delivery to %s given up: the code expired after %d attempt(s)",
                        mask_phone(row["phone"]), row["attempts"])
            events().otp_delivery("expired")
        cur.execute(
            "UPDATE otp_deliveries SET attempts = attempts + 1, next_attempt_at = %s WHERE id IN ("
            " SELECT id FROM otp_deliveries WHERE next_attempt_at <= %s"
            " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
            (now + timedelta(seconds=DELIVERY_LEASE_SECONDS), now, limit))
        return cur.fetchall()

    def _deliver(self, row) -> None:
        masked = mask_phone(row["phone"])

        def delete(cur):
            cur.execute("DELETE FROM otp_deliveries WHERE id = %s", (row["id"],))

        try:
            code = self._open(row)
        except InvalidTag:  # another OTP_HASH_KEY (its hash would not match either), or altered
            log.warning("OTP delivery to %s dropped: the sealed code does not open", masked)
            events().otp_delivery("dropped")
            self.db.run(delete)
            return
        try:
            self.sender.send(row["phone"], code, ttl_seconds=self.settings.otp_ttl_seconds, purpose=row["purpose"])
        except Exception as exc:  # noqa: BLE001 - any sender failure: try again later
            delay = min(RETRY_CAP_SECONDS, self.settings.otp_delivery_retry_seconds * 2 ** (row["attempts"] - 1))
            log.warning("OTP delivery to %s failed: %s (attempt %d, next in %.1f s)",
                        masked, type(exc).__name__, row["attempts"], delay)
            events().otp_delivery("failed")
            self.db.run(lambda cur: cur.execute(
                "UPDATE otp_deliveries SET next_attempt_at = %s WHERE id = %s",
                (self.clock() + timedelta(seconds=delay), row["id"])))
            return
        events().otp_delivery("sent")
        self.db.run(delete)

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
                    # A refused change undoes only itself: the code stays used up.
                    cur.execute("SAVEPOINT otp_change")
                    try:
                        on_success(cur, challenge["phone"])
                    except ChangeRejected:
                        cur.execute("ROLLBACK TO SAVEPOINT otp_change")
                        return Checked("rejected")
                return Checked("ok")
            attempts = challenge["attempts"] + 1
            void = attempts >= s.otp_max_attempts
            cur.execute("UPDATE otp_challenges SET attempts = %s, voided_at = %s WHERE id = %s",
                        (attempts, now if void else None, challenge["id"]))
            if void:
                cur.execute("DELETE FROM otp_deliveries WHERE challenge_id = %s", (challenge["id"],))
            return Checked("void") if void else Checked("wrong", s.otp_max_attempts - attempts)

        return self.db.run(fn)


class DeliveryWorker:
    """Drains the delivery queue in background threads of one process (the action server).

    Woken at once when this process queues a code; otherwise it polls every poll_seconds for
    codes queued by other replicas or due for another try. stop() lets a send in progress end.
    """

    def __init__(self, otp: OtpService, threads: int = 4, poll_seconds: float = 1.0):
        self.otp = otp
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"otp-delivery-{n}", daemon=True)
                         for n in range(threads)]

    def start(self) -> "DeliveryWorker":
        self.otp.on_queued = self._wake.set
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.otp.on_queued = None
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.otp.deliver_due(limit=1) > 0
            except Exception as exc:  # noqa: BLE001 - the database away: try again at the next poll
                log.warning("OTP delivery queue not reachable: %s", type(exc).__name__)
                busy = False
            if not busy and not self._stop.is_set():
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
