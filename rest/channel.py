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
  officer has the conversation the message goes to them instead of to Rasa.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request

from backend.db import Database, DatabaseUnavailable
from backend.repository import utcnow
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


async def answer_turn(on_new_message: Callable[[UserMessage], Awaitable[Any]], message: UserMessage,
                      collector: CollectingOutputChannel, channel: str) -> None:
    """Run one turn; on failure, timeout or silence, leave an apology in the collector."""
    try:
        await asyncio.wait_for(on_new_message(message), timeout=turn_timeout())
    except TrackerStoreUnavailable as exc:
        # Not saved: whatever the turn said would describe a state the conversation lost.
        collector.messages.clear()
        log.error("%s turn failed: conversation store unavailable (%s); apologised", channel, exc)
    except asyncio.TimeoutError:
        log.warning("%s turn took longer than %.0f s; apologised", channel, turn_timeout())
    except Exception as exc:  # noqa: BLE001 - any failure must still get a reply
        log.error("%s turn failed (%s); apologised", channel, type(exc).__name__)
    if not collector.messages:
        await collector.send_text_message(message.sender_id, APOLOGY)


class RestInput(InputChannel):
    def __init__(self, database: Database | None = None):
        self._database = database

    @classmethod
    def name(cls) -> str:
        return "rest"

    def _db(self) -> Database | None:
        if self._database is None and os.environ.get("DATABASE_URL"):
            self._database = Database(os.environ["DATABASE_URL"], max_connections=4)
        return self._database

    async def _gate(self, sender: str, text: str) -> tuple[list[str], str | None]:
        db = self._db()
        if db is None:  # no backend configured (unit tests of the channel alone)
            return [], None
        return await asyncio.get_running_loop().run_in_executor(None, channel_gate, db, sender, text, utcnow)

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
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
            collector = CollectingOutputChannel()
            try:
                pending, officer_ack = await self._gate(sender, text)
            except DatabaseUnavailable:
                return response.json([{"recipient_id": sender, "text": APOLOGY}])
            for note in pending:
                await collector.send_text_message(sender, note)
            if officer_ack is not None:
                await collector.send_text_message(sender, officer_ack)
                return response.json(collector.messages)
            turn = CollectingOutputChannel()
            message = UserMessage(text, turn, sender, input_channel=self.name(), metadata=metadata)
            await answer_turn(on_new_message, message, turn, self.name())
            return response.json(collector.messages + turn.messages)

        return webhook
