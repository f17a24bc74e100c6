"""Meta's webhook, read: the signature over the raw body, then the messages and statuses in it.

Messages and statuses come out of `entry[] -> changes[] -> value`, whatever the batch holds and
however malformed a part of it is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from .graph import mask_wa_id, scrub

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_TEXT_CHARS = 2000  # the REST channel's limit: longer is not a question for this assistant

# What becomes of each message type. Text-like types go to Rasa; these are answered with a
# note that only text and taps are read; anything else (system notices) is only logged.
UNSUPPORTED_TYPES = {"image", "audio", "video", "voice", "document", "sticker", "location", "contacts",
                     "reaction", "order", "unsupported", "unknown"}


def signature_is_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed by the app secret>`."""
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header[len("sha256="):].strip().lower().encode())


def sign(app_secret: str, body: bytes) -> str:
    """The header value Meta would send; for the fake phone and the tests."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Inbound:
    """One message from a citizen.

    `action`: "rasa" (`text` goes to Rasa), "unsupported" (answered politely without Rasa),
    "too_long" (likewise), or "ignore".
    """
    wamid: str
    wa_id: str
    kind: str
    action: str
    text: str | None = None
    timestamp: int = 0
    phone_number_id: str = ""

    def metadata(self) -> dict[str, Any]:
        return {"wa_id": self.wa_id, "wamid": self.wamid, "whatsapp_type": self.kind,
                "timestamp": self.timestamp}


@dataclass(frozen=True)
class Status:
    wamid: str
    status: str
    recipient: str
    errors: list[tuple[Any, str]] = field(default_factory=list)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _timestamp(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def read_message(message: dict, phone_number_id: str = "") -> Inbound | None:
    """One element of value.messages, or None when it is not a message from anyone."""
    wamid, wa_id, kind = _str(message.get("id")), _str(message.get("from")), _str(message.get("type"))
    if not wamid or not wa_id.isdigit() or not 5 <= len(wa_id) <= 20 or len(wamid) > 256:
        return None
    common = {"wamid": wamid, "wa_id": wa_id, "kind": kind or "unknown",
              "timestamp": _timestamp(message.get("timestamp")), "phone_number_id": phone_number_id}
    text = None
    if kind == "text":
        text = _str(_dict(message.get("text")).get("body"))
    elif kind == "interactive":
        interactive = _dict(message.get("interactive"))
        reply_kind = _str(interactive.get("type"))
        if reply_kind in ("button_reply", "list_reply"):
            reply = _dict(interactive.get(reply_kind))
            # The id we gave the button or row is Rasa's payload: a tap equals typing it.
            text = _str(reply.get("id")) or _str(reply.get("title"))
        else:
            return Inbound(**common, action="unsupported")
    elif kind == "button":  # a quick-reply button of a template message
        button = _dict(message.get("button"))
        text = _str(button.get("payload")) or _str(button.get("text"))
    elif kind == "request_welcome":  # the citizen opened the chat for the first time
        text = "/greet"
    elif kind == "reaction":
        # Removing a reaction arrives as a reaction without an emoji: nothing to answer.
        emoji = _str(_dict(message.get("reaction")).get("emoji"))
        return Inbound(**common, action="unsupported" if emoji else "ignore")
    elif kind in UNSUPPORTED_TYPES or not kind:
        return Inbound(**common, action="unsupported")
    else:  # "system" (number changed) and types Meta adds later that need no answer
        return Inbound(**common, action="ignore")
    text = text.strip()
    if not text:
        return Inbound(**common, action="ignore")
    if len(text) > MAX_TEXT_CHARS:
        return Inbound(**common, action="too_long")
    return Inbound(**common, action="rasa", text=text)


def read_webhook(payload: Any) -> tuple[list[Inbound], list[Status]]:
    """All messages and statuses of a webhook body, in the order Meta put them."""
    messages: list[Inbound] = []
    statuses: list[Status] = []
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return messages, statuses
    skipped = 0
    for entry in _list(payload.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            if change.get("field", "messages") != "messages":
                continue
            value = _dict(change.get("value"))
            phone_number_id = _str(_dict(value.get("metadata")).get("phone_number_id"))
            for error in _list(value.get("errors")):
                error = _dict(error)
                log.warning("WhatsApp reported error %s: %s", error.get("code"), scrub(error.get("title")))
            for raw in _list(value.get("messages")):
                message = read_message(raw, phone_number_id) if isinstance(raw, dict) else None
                if message is None:
                    skipped += 1
                else:
                    messages.append(message)
            for raw in _list(value.get("statuses")):
                raw = _dict(raw)
                errors = [(_dict(e).get("code"), scrub(_dict(e).get("title"))) for e in _list(raw.get("errors"))]
                statuses.append(Status(_str(raw.get("id")), _str(raw.get("status")),
                                       _str(raw.get("recipient_id")), errors))
    if skipped:
        log.warning("ignored %d malformed message(s) in a WhatsApp webhook", skipped)
    return messages, statuses


def log_statuses(statuses: list[Status]) -> None:
    """Delivery failures are worth an operator's attention; sent/delivered/read are not."""
    for status in statuses:
        if status.status == "failed":
            codes = ", ".join(f"{code} {title}".strip() for code, title in status.errors) or "no reason given"
            log.warning("WhatsApp could not deliver message %s to %s: %s", scrub(status.wamid, 120),
                        mask_wa_id(status.recipient), codes)
