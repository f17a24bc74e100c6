"""The gate every channel passes a message through first (backend.officer_desk.gate), with the
words the channels then say: while an officer has the conversation, the acknowledgement
utter_officer_forwarded (domain.yml) instead of a bot turn."""

from __future__ import annotations

from backend.db import Database
from backend.officer_desk import gate

from .wording import WORDING

HANDOFF_ACK = WORDING.text("utter_officer_forwarded")


def channel_gate(db: Database, conversation_id: str, text: str, clock) -> tuple[list[str], str | None]:
    """The notifications waiting for this conversation, and the acknowledgement to send instead
    of a bot turn (None: Rasa answers)."""
    passed = gate(db, conversation_id, text, clock)
    return passed.pending, HANDOFF_ACK if passed.handed_over else None
