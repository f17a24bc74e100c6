"""The officers' side of tickets (`make tickets`), telling citizens in their chat, and the gate
every channel passes a message through first (handoffs, waiting notifications).

Telling a citizen: on WhatsApp a message through the Graph API (a template when the 24-hour
customer-service window has closed, as Meta requires), sent by the WhatsAppPush the assembling
code hands in (tools/tickets.py: whatsapp/notify.py); on channels that cannot push (REST, the
terminal) a notification stored and shown before the bot's next reply. The words are the
Wording's responses (domain.yml's, read by the assembling code).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import NamedTuple, Protocol

from .db import Database
from .tickets import OPEN_STATUSES, Tickets, for_officers

log = logging.getLogger(__name__)

WHATSAPP_WINDOW = timedelta(hours=24)

# Said without a Rasa turn: the responses the officers' actions tell the citizen.
RESOLVED = "utter_ticket_resolved"  # {reference} {label} {note}
REJECTED = "utter_ticket_rejected"  # {reference} {label} {note}
OFFICER_SAYS = "utter_officer_says"  # {text}
RELEASED = "utter_officer_released"


class TicketNotFound(LookupError):
    pass


class WhatsAppPush(Protocol):
    """Sends text to a WhatsApp citizen outside a turn: a plain message while window_open (the
    24-hour window), the notice template after it. Raises if it could not be sent."""

    def __call__(self, wa_id: str, text: str, window_open: bool) -> None: ...


class Notifier:
    """Delivers a text to a conversation on the channel it came from."""

    def __init__(self, db: Database, clock, whatsapp: WhatsAppPush):
        self.db = db
        self.clock = clock
        self._whatsapp = whatsapp

    def _last_inbound(self, conversation_id: str):
        def fn(cur):
            cur.execute("SELECT to_regclass('events') AS t")
            if cur.fetchone()["t"] is None:
                return None
            cur.execute("SELECT max(timestamp) AS at FROM events WHERE sender_id = %s AND type_name = 'user'",
                        (conversation_id,))
            return cur.fetchone()["at"]

        return self.db.run(fn)

    def send(self, conversation_id: str, channel: str | None, text: str) -> str:
        """Returns how it went out: "whatsapp", "whatsapp_template" or "stored"."""
        if channel == "whatsapp":
            last = self._last_inbound(conversation_id)
            window_open = last is not None and self.clock().timestamp() - last < WHATSAPP_WINDOW.total_seconds()
            self._whatsapp(conversation_id, text, window_open)
            return "whatsapp" if window_open else "whatsapp_template"

        def store(cur):
            cur.execute("INSERT INTO notifications (conversation_id, text, created_at) VALUES (%s, %s, %s)",
                        (conversation_id, text, self.clock()))

        self.db.run(store)
        return "stored"


class OfficerDesk:
    def __init__(self, tickets: Tickets, notifier: Notifier):
        self.tickets = tickets
        self.db = tickets.db
        self.clock = tickets.clock
        self.notifier = notifier
        self.wording = tickets.wording
        for name in (RESOLVED, REJECTED, OFFICER_SAYS, RELEASED):
            self.wording.text(name)  # a missing response fails here, at start, not when telling

    def open_tickets(self) -> list[dict]:
        def fn(cur):
            cur.execute(
                "SELECT t.reference, t.category, t.status, t.created_at, t.assigned_to, t.channel,"
                " c.nik, c.full_name, (h.active IS TRUE) AS live"
                " FROM tickets t LEFT JOIN citizens c ON c.id = t.citizen_id"
                " LEFT JOIN handoffs h ON h.ticket_id = t.id"
                " WHERE t.status = ANY(%s) ORDER BY t.created_at, t.id", (list(OPEN_STATUSES),))
            return [dict(row) for row in cur.fetchall()]

        return self.db.run(fn)

    def _ticket(self, cur, reference: str, lock: bool = False) -> dict:
        cur.execute("SELECT * FROM tickets WHERE reference = %s" + (" FOR UPDATE" if lock else ""),
                    (reference.strip().upper(),))
        row = cur.fetchone()
        if row is None:
            raise TicketNotFound(reference)
        return row

    def show(self, reference: str) -> dict:
        def fn(cur):
            ticket = dict(self._ticket(cur, reference))
            cur.execute("SELECT at, author, note, public FROM ticket_notes WHERE ticket_id = %s ORDER BY at, id",
                        (ticket["id"],))
            ticket["notes"] = [dict(row) for row in cur.fetchall()]
            if ticket["citizen_id"]:
                cur.execute("SELECT full_name, nik FROM citizens WHERE id = %s", (ticket["citizen_id"],))
                ticket["citizen"] = dict(cur.fetchone())
            cur.execute("SELECT active FROM handoffs WHERE ticket_id = %s", (ticket["id"],))
            handoff = cur.fetchone()
            ticket["live"] = bool(handoff and handoff["active"])
            return ticket

        return self.db.run(fn)

    def _add_note(self, cur, ticket_id: int, author: str, note: str, public: bool) -> None:
        cur.execute("INSERT INTO ticket_notes (ticket_id, at, author, note, public) VALUES (%s, %s, %s, %s, %s)",
                    (ticket_id, self.clock(), author, note, public))

    def _update(self, reference: str, officer: str, *, status: str | None = None, note: str | None = None,
                public: bool = False, assign: bool = False) -> dict:
        def fn(cur):
            ticket = self._ticket(cur, reference, lock=True)
            if status and ticket["status"] not in OPEN_STATUSES:
                raise ValueError(f"{ticket['reference']} is already {ticket['status']}")
            cur.execute(
                "UPDATE tickets SET status = coalesce(%s, status), updated_at = %s,"
                " assigned_to = CASE WHEN %s THEN %s ELSE assigned_to END WHERE id = %s",
                (status, self.clock(), assign, officer, ticket["id"]))
            if note:
                self._add_note(cur, ticket["id"], f"petugas:{officer}", note, public)
            if status in ("selesai", "ditolak"):
                cur.execute("UPDATE handoffs SET active = false, ended_at = %s WHERE ticket_id = %s AND active",
                            (self.clock(), ticket["id"]))
            return dict(ticket)

        return self.db.run(fn)

    def take(self, reference: str, officer: str) -> None:
        self._update(reference, officer, status="diproses", assign=True,
                     note="Tiket diambil petugas", public=False)

    def note(self, reference: str, officer: str, text: str, public: bool = False) -> None:
        self._update(reference, officer, note=text, public=public)

    def _tell(self, ticket: dict, text: str) -> str | None:
        if not ticket.get("conversation_id"):
            return None
        try:
            return self.notifier.send(ticket["conversation_id"], ticket.get("channel"), text)
        except Exception as exc:  # noqa: BLE001 - the ticket is closed either way; say so
            log.error("could not tell the citizen about %s (%s)", ticket["reference"], type(exc).__name__)
            return None

    def resolve(self, reference: str, officer: str, note: str) -> str | None:
        ticket = self._update(reference, officer, status="selesai", note=note, public=True)
        label = self.tickets.label(ticket["category"])
        return self._tell(ticket, self.wording.text(RESOLVED, reference=ticket["reference"], label=label, note=note))

    def reject(self, reference: str, officer: str, note: str) -> str | None:
        ticket = self._update(reference, officer, status="ditolak", note=note, public=True)
        label = self.tickets.label(ticket["category"])
        return self._tell(ticket, self.wording.text(REJECTED, reference=ticket["reference"], label=label, note=note))

    def reply(self, reference: str, officer: str, text: str) -> str | None:
        """An officer's message in a handed-over conversation."""
        ticket = self._update(reference, officer, status="diproses", note=text, public=True, assign=True)
        return self._tell(ticket, self.wording.text(OFFICER_SAYS, text=text))

    def release(self, reference: str, officer: str) -> str | None:
        """The officer is done ("selesai"): the bot answers this conversation again."""
        ticket = self._update(reference, officer, status="selesai", note="Percakapan dikembalikan ke bot")
        return self._tell(ticket, self.wording.text(RELEASED))


class Gate(NamedTuple):
    pending: list[str]   # notifications waiting for this conversation, oldest first
    handed_over: bool    # an officer has the conversation: the message went to them, not to Rasa


# The gate in one statement (PostgreSQL runs each data-modifying WITH part once, whatever the
# query reads): committed on its own, one round trip on every message instead of four.
GATE_SQL = """
WITH delivered AS (
    UPDATE notifications SET delivered_at = %(now)s
    WHERE conversation_id = %(conversation)s AND delivered_at IS NULL RETURNING text, id),
handoff AS (
    SELECT ticket_id FROM handoffs WHERE conversation_id = %(conversation)s AND active LIMIT 1),
noted AS (
    INSERT INTO ticket_notes (ticket_id, at, author, note)
    SELECT ticket_id, %(now)s, 'warga', %(note)s FROM handoff),
touched AS (
    UPDATE tickets SET updated_at = %(now)s WHERE id IN (SELECT ticket_id FROM handoff))
SELECT (SELECT ticket_id FROM handoff) AS ticket_id, ARRAY(SELECT text FROM delivered ORDER BY id) AS pending
"""


def gate(db: Database, conversation_id: str, text: str, clock) -> Gate:
    """First step of every incoming message, at once: the notifications waiting for this
    conversation (marked delivered), and whether an officer has it (the message itself then
    goes to the ticket, masked). The channels say the acknowledgement (rasa_server/gate.py)."""
    # Masked for every message, though stored only while an officer has the conversation:
    # the price of delivering and noting in one atomic statement (docs/performance.md).
    [row] = db.statement(GATE_SQL, {"now": clock(), "conversation": conversation_id,
                                    "note": for_officers(text, 2000)})
    return Gate(list(row["pending"]), row["ticket_id"] is not None)
