"""Rasa's REST channel made strict and polite: every turn gets an answer, bad bodies get a 400.

Differences from rasa.core.channels.rest.RestInput, and why:
- a missing or malformed sender is refused (Rasa would file it under the shared "default"
  conversation, mixing strangers' conversations), and so is a sender that is only a phone
  number: those are WhatsApp's conversation ids (wa_id), which REST must never reach;
- oversized messages are answered without reaching NLU;
- the turn is the one every channel runs (rasa_server/turn.py): the gate shared with the
  WhatsApp channel first (notifications waiting for this conversation, a ticket resolved or an
  officer's reply, come first; while an officer has the conversation the message goes to them
  instead of to Rasa), then Rasa within TURN_TIMEOUT_SECONDS; its time and any apology's cause
  are counted (rasa_server/metrics.py);
- a turn that failed (the database or the action server down or slow), or that produced no
  reply at all, gets the apology instead of silence, after whatever the turn said if it was
  kept, and the log line says what failed without the message text;
- each turn gets a request id, in its log lines and in the message's metadata (so the action
  server's lines carry it too).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request

from backend.db import Database
from backend.events import REQUEST_ID
from rasa_server.turn import TurnOutcome, run_turn
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


def new_request_id() -> str:
    return secrets.token_hex(8)


class RestInput(InputChannel):
    def __init__(self, database: Database | None = None):
        self._database = database
        self._database_lock = threading.Lock()  # made on first use, in an executor thread

    @classmethod
    def name(cls) -> str:
        return "rest"

    def _db(self) -> Database | None:
        with self._database_lock:
            if self._database is None and os.environ.get("DATABASE_URL"):
                self._database = Database(os.environ["DATABASE_URL"], max_connections=4, name="rest")
            return self._database

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
            request_id = new_request_id()
            REQUEST_ID.set(request_id)  # this request's task only: Sanic runs each in its own
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            metadata = {**metadata, "request_id": request_id}
            turn = CollectingOutputChannel()
            message = UserMessage(text, turn, sender, input_channel=self.name(), metadata=metadata)
            outcome = await run_turn(on_new_message, message, channel=self.name(), database=self._db,
                                     timeout=turn_timeout())
            return response.json(self.said(sender, outcome))

        return webhook

    def said(self, sender: str, outcome: TurnOutcome) -> list[dict]:
        """The response to a turn: waiting notifications first, then the officer's
        acknowledgement or the turn's replies, and the apology if the turn needs one."""
        said = [{"recipient_id": sender, "text": note} for note in outcome.pending]
        if outcome.officer_ack is not None:
            return said + [{"recipient_id": sender, "text": outcome.officer_ack}]
        said += outcome.replies
        if outcome.failure is not None:
            log.error("%s turn failed (%s); apologised", self.name(), outcome.failure)
        elif outcome.cause is not None:
            log.error("%s turn said nothing; apologised", self.name())
        if outcome.cause is not None:
            said.append({"recipient_id": sender, "text": APOLOGY})
        return said
