"""What the assistant says, as Graph API message payloads: text, reply buttons, lists, documents.

Pure functions from Rasa's bot messages to the JSON bodies of POST /{phone-number-id}/messages,
within WhatsApp's limits: text 4096 characters; an interactive body 1024; at most 3 reply
buttons with titles of 20; a list of at most 10 rows, titles 24, descriptions 72, its button 20.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import texts

TEXT_LIMIT = 4096
INTERACTIVE_BODY_LIMIT = 1024
CAPTION_LIMIT = 1024
MAX_REPLY_BUTTONS = 3
BUTTON_TITLE_LIMIT = 20
BUTTON_ID_LIMIT = 256
MAX_LIST_ROWS = 10
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
ROW_ID_LIMIT = 200

# A download token as backend/repository.py makes it: secrets.token_urlsafe(32).
CERTIFICATE_TOKEN = re.compile(r"[A-Za-z0-9_\-]{43}")
CERTIFICATE_FILENAME = re.compile(r"[A-Za-z0-9._\-]{1,100}\.pdf")
DEFAULT_FILENAME = "sertifikat-vaksin.pdf"


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis showing that something was cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph, a line or a word when possible."""
    text = text.strip()
    pieces = []
    while len(text) > limit:
        window = text[:limit]
        # The last paragraph, line or word break in the second half; else cut at the limit.
        at = next((i for i in (window.rfind(sep) for sep in ("\n\n", "\n", " ")) if i >= limit // 2), limit)
        pieces.append(text[:at].rstrip())
        text = text[at:].lstrip()
    if text:
        pieces.append(text)
    return pieces


def _envelope(to: str, kind: str, body: dict) -> dict:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": kind,
            kind: body}


def text_messages(to: str, text: str) -> list[dict]:
    return [_envelope(to, "text", {"preview_url": False, "body": piece}) for piece in split_text(text)]


def _button_id(button: dict, limit: int) -> str:
    """What comes back in the webhook when tapped: Rasa's payload, so a tap is the same turn as
    typing the button's payload; the title if the payload would not fit."""
    payload = str(button.get("payload") or "").strip()
    return payload if payload and len(payload) <= limit else cut(button.get("title", ""), limit)


def numbered_text(text: str, buttons: list[dict]) -> str:
    lines = [f"{i}. {b.get('title', '')}" for i, b in enumerate(buttons, 1)]
    return "\n".join([text.strip(), "", *lines, "", texts.TYPE_YOUR_CHOICE]).strip()


def button_messages(to: str, text: str, buttons: list[dict]) -> list[dict]:
    """Up to 3 buttons: reply buttons; 4 to 10: a list; more: numbered text."""
    buttons = [b for b in buttons if isinstance(b, dict) and (b.get("title") or b.get("payload"))]
    text = (text or "").strip()
    if not buttons:
        return text_messages(to, text) if text else []
    if len(buttons) > MAX_LIST_ROWS:
        return text_messages(to, numbered_text(text, buttons))

    # WhatsApp refuses duplicate titles or ids in one message; cutting titles may create them.
    if len(buttons) <= MAX_REPLY_BUTTONS:
        rows = [{"id": _button_id(b, BUTTON_ID_LIMIT), "title": cut(b.get("title") or b.get("payload"),
                                                                    BUTTON_TITLE_LIMIT)} for b in buttons]
    else:
        rows = []
        for b in buttons:
            title = str(b.get("title") or b.get("payload"))
            row = {"id": _button_id(b, ROW_ID_LIMIT), "title": cut(title, ROW_TITLE_LIMIT)}
            if len(" ".join(title.split())) > ROW_TITLE_LIMIT:  # the whole title, where it fits
                row["description"] = cut(title, ROW_DESCRIPTION_LIMIT)
            rows.append(row)
    if len({r["id"] for r in rows}) < len(rows) or len({r["title"] for r in rows}) < len(rows):
        return text_messages(to, numbered_text(text, buttons))

    # A body too long for an interactive message goes first as text; the choice follows.
    before: list[dict] = []
    if len(text) > INTERACTIVE_BODY_LIMIT:
        before, text = text_messages(to, text), texts.CHOOSE_ONE
    body = {"text": text or texts.CHOOSE_ONE}
    if len(rows) <= MAX_REPLY_BUTTONS:
        interactive = {"type": "button", "body": body,
                       "action": {"buttons": [{"type": "reply", "reply": r} for r in rows]}}
    else:
        interactive = {"type": "list", "body": body,
                       "action": {"button": texts.LIST_BUTTON, "sections": [{"rows": rows}]}}
    return before + [_envelope(to, "interactive", interactive)]


@dataclass(frozen=True)
class Certificate:
    """The certificate a bot message carries as data (utter_certificate_ready's
    `custom.certificate`): never read from the message's text."""
    token: str
    filename: str
    caption: str


def certificate_part(message: dict) -> Certificate | None:
    """The message's certificate, if its data names one with a well-formed token; else None
    (the message is then sent as what it is, text)."""
    custom = message.get("custom")
    part = custom.get("certificate") if isinstance(custom, dict) else None
    if not isinstance(part, dict):
        return None
    token = part.get("token")
    if not isinstance(token, str) or not CERTIFICATE_TOKEN.fullmatch(token):
        return None
    filename = part.get("filename")
    if not isinstance(filename, str) or not CERTIFICATE_FILENAME.fullmatch(filename):
        filename = DEFAULT_FILENAME
    caption = part.get("caption")
    caption = cut(caption, CAPTION_LIMIT) if isinstance(caption, str) and caption.strip() else ""
    return Certificate(token, filename, caption or texts.CERTIFICATE_CAPTION)


def document_message(to: str, media_id: str, filename: str, caption: str) -> dict:
    return _envelope(to, "document", {"id": media_id, "filename": filename, "caption": caption})


def image_message(to: str, link: str, caption: str = "") -> dict:
    image: dict[str, Any] = {"link": link}
    if caption:
        image["caption"] = cut(caption, CAPTION_LIMIT)
    return _envelope(to, "image", image)


def otp_template_message(to: str, template: str, language: str, code: str) -> dict:
    """An authentication template: the code in the body and in the copy-code button, which
    Meta creates as a URL button (index 0), hence sub_type "url"."""
    return _envelope(to, "template", {
        "name": template,
        "language": {"code": language},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": code}]},
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": code}]},
        ],
    })


def notice_template_message(to: str, template: str, language: str, text: str) -> dict:
    """A utility template with one body variable, for telling a citizen something (a ticket's
    outcome) after the 24-hour window closed, when Meta allows only templates."""
    return _envelope(to, "template", {
        "name": template,
        "language": {"code": language},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": cut(text, 1024)}]}],
    })
