"""Rasa's REST channel made strict and polite: every turn gets an answer, bad bodies get a 400.

Differences from rasa.core.channels.rest.RestInput, and why:
- a missing or malformed sender is refused (Rasa would file it under the shared "default"
  conversation, mixing strangers' conversations), and so is a sender that is only a phone
  number: those are WhatsApp's conversation ids (wa_id), which REST must never reach;
- oversized messages are answered without reaching NLU;
- a turn that fails or takes longer than TURN_TIMEOUT_SECONDS (the database or the action
  server is down or slow), or that produced no reply at all, gets an apology instead of
  silence, and the log line says what failed without the message text;
- every message first passes the gate shared with the WhatsApp channel: notifications waiting
  for this conversation (a ticket resolved, an officer's reply) come first, and while an
  officer has the conversation the message goes to them instead of to Rasa;
- each turn gets a request id, in its log lines and in the message's metadata (so the action
  server's lines carry it too), and its time and any apology's cause are counted
  (rasa_server/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import secrets
import time
from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request

from backend.db import Database, DatabaseUnavailable
from backend.events import REQUEST_ID
from backend.repository import utcnow
from rasa_server import metrics
from rasa_server.gate import channel_gate
from rasa_server.tracker_store import TrackerStoreUnavailable
from rasa_server.wording import WORDING

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000
SENDER = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,128}$")
PHONE_LIKE = re.compile(r"^\+?[0-9]+$")

# Said by the channel itself when Rasa could not answer: domain.yml's responses, read at start.
APOLOGY = WORDING.text("utter_channel_unavailable")
TOO_LONG = WORDING.text("utter_channel_too_long", max_chars=MAX_MESSAGE_CHARS)


def turn_timeout() -> float:
    return float(os.environ.get("TURN_TIMEOUT_SECONDS", "10"))


# Set while a turn runs: an error logged by Rasa's processor meanwhile (it catches a failed action
# and carries on, often saying nothing) is the cause of the apology that follows.
_turn_errors: contextvars.ContextVar[list | None] = contextvars.ContextVar("rest_turn_errors", default=None)


class TurnErrorWatch(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        errors = _turn_errors.get()
        if errors is not None and record.levelno >= logging.ERROR:
            errors.append(record.name)
        return True


def _watch_rasa_errors() -> None:
    # On the logger itself, not a handler: it sees the record whatever logging is configured.
    processor = logging.getLogger("rasa.core.processor")
    if not any(isinstance(f, TurnErrorWatch) for f in processor.filters):
        processor.addFilter(TurnErrorWatch())


def new_request_id() -> str:
    return secrets.token_hex(8)


async def answer_turn(on_new_message: Callable[[UserMessage], Awaitable[Any]], message: UserMessage,
                      collector: CollectingOutputChannel, channel: str) -> str | None:
    """Run one turn; on failure, timeout or silence, leave an apology in the collector and
    return its cause (one of rasa_server.metrics.APOLOGY_CAUSES), else None."""
    cause = None
    errors: list[str] = []
    token = _turn_errors.set(errors)
    try:
        await asyncio.wait_for(on_new_message(message), timeout=turn_timeout())
    except TrackerStoreUnavailable as exc:
        # Not saved: whatever the turn said would describe a state the conversation lost.
        collector.messages.clear()
        cause = "conversation_store"
        log.error("%s turn failed: conversation store unavailable (%s); apologised", channel, exc)
    except asyncio.TimeoutError:
        cause = "timeout"
        log.warning("%s turn took longer than %.0f s; apologised", channel, turn_timeout())
    except Exception as exc:  # noqa: BLE001 - any failure must still get a reply
        cause = "error"
        log.error("%s turn failed (%s); apologised", channel, type(exc).__name__)
    finally:
        _turn_errors.reset(token)
    if not collector.messages:
        await collector.send_text_message(message.sender_id, APOLOGY)
        return cause or ("action_failed" if errors else "no_reply")
    return None  # what the turn said before it failed is its answer, as before


def count_turn(channel: str, started: float, cause: str | None) -> None:
    metrics.TURN_SECONDS.labels(channel, "answered" if cause is None else "apology").observe(
        time.monotonic() - started)
    if cause is not None:
        metrics.APOLOGIES.labels(channel, cause).inc()


class RestInput(InputChannel):
    def __init__(self, database: Database | None = None):
        self._database = database
        _watch_rasa_errors()

    @classmethod
    def name(cls) -> str:
        return "rest"

    def _db(self) -> Database | None:
        if self._database is None and os.environ.get("DATABASE_URL"):
            self._database = Database(os.environ["DATABASE_URL"], max_connections=4, name="rest")
        return self._database

    async def _gate(self, sender: str, text: str) -> tuple[list[str], str | None]:
        db = self._db()
        if db is None:  # no backend configured (unit tests of the channel alone)
            return [], None
        # In the turn's context, so that the gate's log lines carry its request id.
        return await asyncio.get_running_loop().run_in_executor(
            None, contextvars.copy_context().run, channel_gate, db, sender, text, utcnow)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        webhook = Blueprint("rest_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(request: Request):
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request):
            try:
                body = request.json
            except Exception:  # noqa: BLE001 - Sanic raises its own error types on bad JSON
                body = None
            if not isinstance(body, dict):
                return response.json({"error": "body must be a JSON object"}, status=400)
            sender, text = body.get("sender"), body.get("message")
            if not isinstance(sender, str) or not SENDER.match(sender) or PHONE_LIKE.match(sender):
                return response.json({"error": "sender: 1-128 letters, digits or _.:@+-, not only digits"},
                                     status=400)
            if not isinstance(text, str):
                return response.json({"error": "message must be a string"}, status=400)
            if len(text) > MAX_MESSAGE_CHARS:
                return response.json([{"recipient_id": sender, "text": TOO_LONG}])
            started = time.monotonic()
            request_id = new_request_id()
            REQUEST_ID.set(request_id)  # this request's task only: Sanic runs each in its own
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            metadata = {**metadata, "request_id": request_id}
            collector = CollectingOutputChannel()
            try:
                pending, officer_ack = await self._gate(sender, text)
            except DatabaseUnavailable:
                count_turn(self.name(), started, "database")
                return response.json([{"recipient_id": sender, "text": APOLOGY}])
            for note in pending:
                await collector.send_text_message(sender, note)
            if officer_ack is not None:
                await collector.send_text_message(sender, officer_ack)
                count_turn(self.name(), started, None)
                return response.json(collector.messages)
            turn = CollectingOutputChannel()
            message = UserMessage(text, turn, sender, input_channel=self.name(), metadata=metadata)
            cause = await answer_turn(on_new_message, message, turn, self.name())
            count_turn(self.name(), started, cause)
            return response.json(collector.messages + turn.messages)

        return webhook
