"""The Rasa channel for Meta's WhatsApp Cloud API, webhook at /webhooks/whatsapp/webhook.

Registered in credentials.yml as `whatsapp.channel.WhatsAppInput`; settings from WHATSAPP_*
(docs/whatsapp.md).
A POST is authenticated (X-Hub-Signature-256) before it is read, its messages are claimed in
PostgreSQL (kept pending there: whatsapp/dedupe.py) so that a redelivery is dropped, and Meta gets
its 200 at once; if they cannot be recorded (database down) Meta gets a 503 and delivers again
later. The turns run in the background, one sender's messages one after the other, each the turn
every channel runs (rasa_server/turn.py: the gate, Rasa, what failed). Each turn's replies are
collected, then sent through the Graph API, a certificate (named in the message's
data, never found in its text) as a PDF document. A turn that failed (Rasa raised, the action
server or database unreachable, no answer in time) gets the apology once and stays pending: it
is run again when things are back, until it ran (or a day passed), so no message is dropped;
one that ran but said nothing gets the apology. Each turn gets a request id (log lines, and the
message's metadata for the action server); its time, any apology's cause and every refused
signature are counted (rasa_server/metrics.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request

from backend.db import Database, DatabaseUnavailable, migrate
from backend.events import REQUEST_ID
from rasa_server import metrics
from rasa_server.turn import TurnOutcome, run_turn

from . import outbound, texts
from .dedupe import Pending, SeenMessages
from .graph import GraphClient, GraphError, mask_wa_id
from .inbound import SIGNATURE_HEADER, Inbound, log_statuses, read_webhook, signature_is_valid
from .settings import MAX_CLOCK_AHEAD_SECONDS, WhatsAppSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Meta's batches are a few kB
MAX_CHALLENGE_CHARS = 256


# --- output ---------------------------------------------------------------------------------

class CollectedOutput(OutputChannel):
    """Keeps a turn's bot messages as Rasa made them; they are sent once the turn is over."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    @classmethod
    def name(cls) -> str:
        return "whatsapp"

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        self.messages.append(dict(message))

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        self.messages.append({"text": text})


class DirectOutput(OutputChannel):
    """For messages Rasa sends outside a turn (reminders, external events): sent at once."""

    def __init__(self, deliver: Callable[[str, list[dict]], Awaitable[int]]):
        self.deliver = deliver

    @classmethod
    def name(cls) -> str:
        return "whatsapp"

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        await self.deliver(recipient_id, [dict(message)])

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.deliver(recipient_id, [{"text": text}])


# --- per-sender order -----------------------------------------------------------------------

@dataclass
class Delivery:
    """A message waiting for its turn, with the claim of its batch's ids in PostgreSQL (a future
    shared by the batch: it resolves to the ids seen for the first time); `attempt` 1 for a
    message just received, more when a pending one is tried again."""
    message: Inbound
    claim: asyncio.Future
    attempt: int = 1


class SenderQueues:
    """One queue and one worker per sender while it has work: a citizen's messages are handled
    in the order received, different citizens' at the same time. Across replicas, Rasa's lock
    store keeps one conversation's turns apart; this keeps their order within a replica."""

    def __init__(self, process: Callable[[Delivery], Awaitable[None]]):
        self.process = process
        self._queues: dict[str, deque] = {}
        self._workers: dict[str, asyncio.Task] = {}

    def submit(self, delivery: Delivery) -> None:
        key = delivery.message.wa_id
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(delivery)
            return
        self._queues[key] = deque([delivery])
        self._workers[key] = asyncio.get_running_loop().create_task(self._drain(key))

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                delivery = queue.popleft()
                try:
                    await self.process(delivery)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one bad message must not stop the next ones
                    log.exception("WhatsApp message from %s could not be handled", mask_wa_id(key))
        finally:
            # No await between the queue running empty and this: nothing can slip in between.
            self._queues.pop(key, None)
            self._workers.pop(key, None)

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    async def idle(self) -> None:
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*list(self._workers.values()), return_exceptions=True)


# --- the channel ----------------------------------------------------------------------------

class WhatsAppInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return "whatsapp"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> "WhatsAppInput":
        # Everything comes from the environment (WHATSAPP_*); credentials.yml only names the class.
        return cls(WhatsAppSettings.from_env())

    def __init__(self, settings: WhatsAppSettings | None = None, *, database: Database | None = None):
        self.settings = settings or WhatsAppSettings.from_env()
        self.graph = GraphClient(self.settings)
        self._database = database
        self._seen: SeenMessages | None = None
        self._setup_lock = threading.Lock()
        self._on_new_message: Callable[[UserMessage], Awaitable[Any]] | None = None
        self._turns: asyncio.Semaphore | None = None
        self.queues = SenderQueues(self._process)
        # Pending ids queued or running here (counted: a redelivery may be queued alongside):
        # the retry loop does not take them a second time.
        self._in_hand: Counter[str] = Counter()
        self._retrying: asyncio.Task | None = None

    # -- set-up ---------------------------------------------------------------------------

    def _seen_messages(self) -> SeenMessages:
        """The dedupe store, made on first use (in an executor thread, hence the lock). The
        schema is migrated by whichever process gets there first: Rasa may start before any
        action server did."""
        with self._setup_lock:
            if self._seen is None:
                if self._database is None:
                    if not self.settings.database_url:
                        raise DatabaseUnavailable("DATABASE_URL is not set")
                    self._database = Database(self.settings.database_url,
                                              max_connections=self.settings.db_pool_max, name="whatsapp")
                migrate(self._database)
                self._seen = SeenMessages(self._database, self.settings.dedupe_days,
                                          lease_seconds=self.settings.pending_lease_seconds)
            return self._seen

    def _gate_database(self) -> Database:
        """The database of the channel gate (handoffs, notifications): the dedupe store's."""
        self._seen_messages()
        return self._database

    def get_output_channel(self) -> OutputChannel:
        return DirectOutput(self.deliver)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        self._on_new_message = on_new_message
        webhook = Blueprint("whatsapp_webhook", __name__)
        missing = [name for name, value in (("WHATSAPP_APP_SECRET", self.settings.app_secret),
                                            ("WHATSAPP_VERIFY_TOKEN", self.settings.verify_token))
                   if not value] + self.settings.missing_for_sending()
        if missing:
            log.info("WhatsApp channel not configured (%s unset): it can neither take in nor answer "
                     "messages until they are set", ", ".join(missing))

        @webhook.route("/", methods=["GET"])
        async def health(request: Request):
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["GET"])
        async def verify(request: Request):
            return self.handshake(request.args.get("hub.mode"), request.args.get("hub.verify_token"),
                                  request.args.get("hub.challenge"))

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request):
            return await self.receive(request.body or b"", request.headers.get(SIGNATURE_HEADER))

        @webhook.listener("after_server_start")
        async def retry_pending(app, loop):
            if not self.settings.app_secret:
                return  # not configured: nothing can have been taken in
            self._retrying = loop.create_task(self._retry_pending())

        @webhook.listener("before_server_stop")
        async def finish(app, loop):
            if self._retrying is not None:
                self._retrying.cancel()
            # Meta was told "received": turns under way are finished (within a grace period);
            # one cancelled stays pending and is taken up by the next process after its lease.
            try:
                await asyncio.wait_for(self.queues.idle(), self.settings.shutdown_grace_seconds)
            except asyncio.TimeoutError:
                log.error("stopping with WhatsApp turns still running; they are cancelled")
            await self.queues.cancel()
            await self.graph.close()

        return webhook

    # -- inbound --------------------------------------------------------------------------

    def handshake(self, mode: str | None, token: str | None, challenge: str | None):
        """Meta's GET when the webhook is configured: echo the challenge if the token is ours."""
        expected = self.settings.verify_token
        if (mode == "subscribe" and expected and token and challenge
                and len(challenge) <= MAX_CHALLENGE_CHARS
                and hmac.compare_digest(token.encode(), expected.encode())):
            return response.text(challenge)
        log.warning("refused a WhatsApp webhook verification (wrong mode or token)")
        return response.text("forbidden", status=403)

    async def receive(self, body: bytes, signature: str | None):
        if not self.settings.app_secret:
            return response.json({"error": "not configured"}, status=503)
        if len(body) > MAX_BODY_BYTES:
            return response.json({"error": "too large"}, status=413)
        # Authenticated before anything else is done with the body.
        if not signature:
            metrics.SIGNATURE_FAILURES.labels("missing").inc()
            log.warning("refused a WhatsApp webhook without a signature")
            return response.json({"error": "signature missing"}, status=401)
        if not signature_is_valid(self.settings.app_secret, body, signature):
            metrics.SIGNATURE_FAILURES.labels("invalid").inc()
            log.warning("refused a WhatsApp webhook with a wrong signature")
            return response.json({"error": "signature invalid"}, status=403)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return response.json({"error": "body is not JSON"}, status=400)
        messages, statuses = read_webhook(payload)
        log_statuses(statuses)
        wanted = sorted((m for m in messages if m.action != "ignore"), key=lambda m: m.timestamp)
        wanted = self._within_age_limit(wanted)
        if wanted:
            kept = {m.wamid: dataclasses.asdict(m) for m in wanted if m.action == "rasa"}
            self._in_hand.update(m.wamid for m in wanted)  # each released by its _process
            claim = asyncio.get_running_loop().run_in_executor(
                None, lambda: self._seen_messages().claim([m.wamid for m in wanted], kept))
            # Queued before the claim is known: two deliveries of one sender keep the order in
            # which they arrived, whichever claim finishes first.
            for message in wanted:
                self.queues.submit(Delivery(message, claim))
            try:
                await claim
            except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable, or a broken schema
                # Not taken in: Meta delivers it again later, when it can be deduplicated.
                log.error("WhatsApp webhook refused for now: database unavailable (%s)",
                          exc if isinstance(exc, DatabaseUnavailable) else type(exc).__name__)
                return response.json({"error": "try again later"}, status=503)
        return response.json({"status": "ok"})

    def _within_age_limit(self, messages: list[Inbound]) -> list[Inbound]:
        """The messages dated within the dedupe window (a message without a date is not). An
        older one may be a captured body replayed after its id was forgotten; it is acknowledged
        (Meta would only send it again) but not processed."""
        now = time.time()
        oldest, latest = now - self.settings.message_max_age_seconds, now + MAX_CLOCK_AHEAD_SECONDS
        kept = [m for m in messages if oldest <= m.timestamp <= latest]
        if len(kept) < len(messages):
            log.warning("ignored %d WhatsApp message(s) dated outside the last %d days or in the future",
                        len(messages) - len(kept), self.settings.dedupe_days)
        return kept

    # -- one message ----------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        try:
            await self._handle(delivery)
        finally:
            self._in_hand[delivery.message.wamid] -= 1
            if self._in_hand[delivery.message.wamid] <= 0:
                del self._in_hand[delivery.message.wamid]

    async def _handle(self, delivery: Delivery) -> None:
        message = delivery.message
        try:
            fresh = await delivery.claim
        except Exception:  # noqa: BLE001 - the POST was refused with a 503: Meta sends it again
            return
        if message.wamid not in fresh:
            log.info("dropped a redelivered WhatsApp message %s", message.wamid[:60])
            return
        fresh.discard(message.wamid)  # the same id twice in one batch: handled once
        if message.action == "unsupported":
            await self.deliver(message.wa_id, [{"text": texts.UNSUPPORTED}])
            return
        if message.action == "too_long":
            await self.deliver(message.wa_id, [{"text": texts.TOO_LONG}])
            return
        if message.action != "rasa" or self._on_new_message is None:
            return
        request = REQUEST_ID.set(secrets.token_hex(8))
        try:
            outcome = await self._turn(message, retry=delivery.attempt > 1)
        finally:
            REQUEST_ID.reset(request)
        # Notifications first (the gate has marked them delivered), then the turn's own.
        notes = [{"text": note} for note in outcome.pending]
        if outcome.officer_ack is not None:
            notes.append({"text": outcome.officer_ack})
        said = notes + outcome.replies
        if outcome.failure is None:
            if outcome.cause is not None:
                log.error("WhatsApp turn of %s said nothing; apologised", mask_wa_id(message.wa_id))
                said.append({"text": texts.APOLOGY})
            # Recorded as answered before the answer goes out: if the database went away just
            # now, the citizen is answered anyway and the message stays pending; its lease then
            # runs out and it is answered again (at least once, never lost).
            await self._settle(message, lambda seen: seen.answered(message.wamid))
            await self.deliver(message.wa_id, said)
            return
        # Kept pending and tried again later; the citizen hears the apology once, not at every
        # attempt.
        await self._settle(message, lambda seen: seen.failed(message.wamid, delivery.attempt,
                                                              self.settings.pending_retry_seconds))
        if delivery.attempt == 1:
            log.error("WhatsApp turn of %s failed (%s); apologised, will try again",
                      mask_wa_id(message.wa_id), outcome.failure)
            await self.deliver(message.wa_id, said + [{"text": texts.APOLOGY}])
        else:
            log.warning("WhatsApp turn of %s failed again (%s, attempt %d); will try again",
                        mask_wa_id(message.wa_id), outcome.failure, delivery.attempt)
            if notes:
                await self.deliver(message.wa_id, notes)

    async def _settle(self, message: Inbound, change: Callable[[SeenMessages], None]) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: change(self._seen_messages()))
        except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable: the lease decides instead
            log.error("WhatsApp message of %s not marked (%s)", mask_wa_id(message.wa_id), type(exc).__name__)

    async def _turn(self, message: Inbound, retry: bool) -> TurnOutcome:
        """One message's turn (rasa_server/turn.py), at most WHATSAPP_MAX_CONCURRENT_TURNS at once."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.settings.max_concurrent_turns)
        user_message = UserMessage(message.text, CollectedOutput(), message.wa_id, input_channel=self.name(),
                                   message_id=message.wamid,
                                   metadata={**message.metadata(), "request_id": REQUEST_ID.get()})
        return await run_turn(self._on_new_message, user_message, channel=self.name(),
                              database=self._gate_database, timeout=self.settings.turn_timeout_seconds,
                              limit=self._turns, retry=retry)

    async def _retry_pending(self) -> None:
        """Every few seconds: the pending messages whose time has come, back into their
        sender's queue. Quiet while the database is away (one line when it goes, one when back)."""
        loop = asyncio.get_running_loop()
        away = False
        while True:
            await asyncio.sleep(self.settings.pending_poll_seconds)
            try:
                due, given_up = await loop.run_in_executor(None, lambda: self._seen_messages().take_due())
            except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable: try at the next round
                if not away:
                    log.warning("pending WhatsApp messages not looked for (%s)", type(exc).__name__)
                away = True
                continue
            if away:
                log.info("pending WhatsApp messages looked for again")
            away = False
            if given_up:
                log.error("gave up %d WhatsApp message(s) unanswered for a day", given_up)
            for item in due:
                self._resubmit(loop, item)

    def _resubmit(self, loop: asyncio.AbstractEventLoop, item: Pending) -> None:
        if item.wamid in self._in_hand:
            return  # still queued or running here: its lease is only being renewed
        try:
            message = Inbound(**item.message)
        except TypeError:
            log.error("a pending WhatsApp message could not be read back; dropped")
            return
        claimed = loop.create_future()
        claimed.set_result({item.wamid})
        self._in_hand[item.wamid] += 1
        self.queues.submit(Delivery(message, claimed, item.attempts))

    # -- outbound -------------------------------------------------------------------------

    async def deliver(self, wa_id: str, bot_messages: list[dict]) -> int:
        """Send Rasa's messages in order; returns how many Graph API messages went out. A message
        that cannot be sent is logged (by the client) and the next ones are still tried."""
        sent = 0
        if self.settings.missing_for_sending():
            log.error("cannot answer %s: %s unset", mask_wa_id(wa_id), ", ".join(self.settings.missing_for_sending()))
            return 0
        for message in bot_messages:
            text = str(message.get("text") or "")
            certificate = outbound.certificate_part(message)
            if certificate is not None:
                sent += await self._send_certificate(wa_id, text, certificate)
                continue
            payloads: list[dict] = []
            buttons = message.get("buttons") or message.get("quick_replies")
            if isinstance(buttons, list) and buttons:
                payloads += outbound.button_messages(wa_id, text, buttons)
            elif text:
                payloads += outbound.text_messages(wa_id, text)
            if isinstance(message.get("image"), str):
                payloads.append(outbound.image_message(wa_id, message["image"]))
            if isinstance(message.get("attachment"), str):
                payloads += outbound.text_messages(wa_id, message["attachment"])
            custom = message.get("custom")
            if isinstance(custom, dict) and isinstance(custom.get("type"), str):
                # A message written in the Graph API's own terms, from a response's `custom:`.
                payloads.append({**custom, "messaging_product": "whatsapp", "to": wa_id})
            for payload in payloads:
                sent += await self._send(payload)
        return sent

    async def _send(self, payload: dict) -> int:
        try:
            await self.graph.send_message(payload)
            return 1
        except GraphError:
            return 0  # logged by the client, with Meta's error code

    async def _send_certificate(self, wa_id: str, text: str, certificate: outbound.Certificate) -> int:
        """The certificate named in the message's data as a document: fetched from the action
        server's own base (never from a URL found in text), uploaded to Meta, sent. If any step
        fails the citizen gets the message's text, whose link works the same."""
        try:
            content, content_type = await self.graph.download(self.settings.certificate_url(certificate.token))
            if not content_type.startswith("application/pdf") or not content.startswith(b"%PDF"):
                raise GraphError(200, None, "the link did not give a PDF")
            media_id = await self.graph.upload_media(content, "application/pdf", certificate.filename)
            await self.graph.send_message(outbound.document_message(
                wa_id, media_id, certificate.filename, certificate.caption))
            return 1
        except (GraphError, aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            # The link itself is never logged: it carries the download token.
            log.warning("certificate for %s not sent as a document (%s); sent the link instead",
                        mask_wa_id(wa_id), type(exc).__name__)
        sent = 0
        for payload in outbound.text_messages(wa_id, text):
            sent += await self._send(payload)
        return sent
