"""Complaint tickets followed in the chat, the diagnosis before one is opened, handoffs to an
officer, and the officers' side of them (used by tools/tickets.py).

A citizen sees the tickets of their verified account only; officers see everything, with
texts from the chat masked (backend.logmask) before they are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from .logmask import mask_text
from .repository import NotVerified, Person, Repository
from .staff_text import for_staff
from .wording import Wording

WIB = timezone(timedelta(hours=7), "WIB")  # Indonesia's western time; no daylight saving

CATEGORY_NAMES = ("certificate_missing", "wrong_data", "otp_not_received", "other", "correction_nik",
                  "correction_birth_date", "handoff")
# Working days an officer needs, told to the citizen when the ticket is opened.
EXPECTED_DAYS = {"certificate_missing": 3, "wrong_data": 7, "otp_not_received": 2, "other": 5}
OPEN_STATUSES = ("diterima", "diproses")
# A certificate normally follows the facility's data entry within this many days.
USUAL_PROCESSING_DAYS = 3


def ticket_labels(wording: Wording) -> dict[str, str]:
    """Each category's label as citizens and officers read it: the response
    utter_ticket_category_<category> (a missing one is a KeyError, at start)."""
    return {category: wording.text(f"utter_ticket_category_{category}") for category in CATEGORY_NAMES}


def for_officers(text: str, limit: int) -> str:
    """A citizen's text as stored for officers: masked, then its control characters shown as
    escapes (PostgreSQL cannot even store a NUL; masking first, as an escape has digits)."""
    return for_staff(mask_text(text), keep_lines=True)[:limit]


@dataclass(frozen=True)
class Ticket:
    id: int
    reference: str
    category: str
    status: str
    created_at: datetime
    description: str
    last_note: str | None = None
    label: str = ""  # the category as the citizen reads it (Tickets.label)


@dataclass(frozen=True)
class Diagnosis:
    """Why a certificate may not have appeared. kind: "no_record", "other_account",
    "processing" (with the doses and days since) or "all_issued"."""
    kind: str
    person: Person
    pending: tuple = ()          # ((dose, vaccinated_on, days since), ...)
    issued: tuple = ()           # doses with a certificate


# A report repeated within this long is the same report (see Tickets.open).
REPEAT_WINDOW = timedelta(minutes=10)


class Tickets:
    def __init__(self, repo: Repository, wording: Wording):
        self.repo = repo
        self.db = repo.db
        self.clock = repo.clock
        self.wording = wording
        self.labels = ticket_labels(wording)

    def label(self, category: str) -> str:
        return self.labels.get(category, category)

    # --- the citizen's side (verified sessions only) ---------------------------------------

    def _new_reference(self, cur) -> str:
        cur.execute("SELECT nextval('ticket_number_seq') AS n")
        return f"PL-{self.clock():%Y}-{cur.fetchone()['n']:06d}"

    def open(self, conversation_id: str, category: str, description: str, channel: str | None) -> Ticket:
        """A new ticket; or, for the same report from the same conversation within REPEAT_WINDOW,
        the one already opened: a confirmation sent again because its answer never came (Rasa
        died after the ticket was stored, before the turn was saved) opens no second ticket."""
        assert category in EXPECTED_DAYS

        def fn(cur):
            person = self.repo._current_person(cur, conversation_id)
            now = self.clock()
            text = for_officers(description.strip(), 1000) or self.labels[category]
            # One report of a conversation at a time, even from two processes at once.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("ticket:" + conversation_id,))
            cur.execute(
                "SELECT id, reference, status, created_at FROM tickets WHERE conversation_id = %s"
                " AND citizen_id = %s AND category = %s AND description = %s AND created_at > %s"
                " ORDER BY id DESC LIMIT 1",
                (conversation_id, person.id, category, text, now - REPEAT_WINDOW))
            same = cur.fetchone()
            if same is not None:
                return Ticket(same["id"], same["reference"], category, same["status"], same["created_at"], text,
                              label=self.labels[category])
            reference = self._new_reference(cur)
            cur.execute(
                "INSERT INTO tickets (reference, citizen_id, conversation_id, category, description,"
                " channel, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (reference, person.id, conversation_id, category, text, channel, now, now))
            ticket_id = cur.fetchone()["id"]
            self.repo._audit(cur, conversation_id, person, "ticket_opened",
                             {"reference": reference, "category": category})
            return Ticket(ticket_id, reference, category, "diterima", now, text, label=self.labels[category])

        return self.db.run(fn)

    def of_account(self, conversation_id: str, reference: str | None = None, limit: int = 5) -> list[Ticket]:
        """The tickets of the verified account's people (newest first), or the one with that
        reference if it is theirs; someone else's reference finds nothing, like a wrong one."""

        def fn(cur):
            session = self.repo._session(cur, conversation_id)
            if session is None:
                raise NotVerified()
            cur.execute(
                "SELECT t.id, t.reference, t.category, t.status, t.created_at, t.description,"
                " (SELECT n.note FROM ticket_notes n WHERE n.ticket_id = t.id AND n.public"
                "  ORDER BY n.at DESC, n.id DESC LIMIT 1) AS last_note"
                " FROM tickets t JOIN citizens c ON c.id = t.citizen_id"
                " WHERE c.account_id = %s AND (%s::text IS NULL OR t.reference = %s)"
                " ORDER BY t.created_at DESC, t.id DESC LIMIT %s",
                (session["account_id"], reference, reference, limit))
            return [Ticket(**row, label=self.label(row["category"])) for row in cur.fetchall()]

        return self.db.run(fn)

    def diagnose(self, conversation_id: str) -> Diagnosis:
        """What the records say about a certificate that "did not appear", before a ticket."""

        def fn(cur):
            person = self.repo._current_person(cur, conversation_id)
            doses = self.repo._doses(cur, person.id)
            if not doses:
                # The same person registered under another account (another number and NIK).
                cur.execute(
                    "SELECT 1 FROM citizens c JOIN vaccinations v ON v.citizen_id = c.id"
                    " WHERE lower(c.full_name) = lower(%s) AND c.birth_date = %s AND c.id <> %s"
                    " LIMIT 1", (person.full_name, person.birth_date, person.id))
                return Diagnosis("other_account" if cur.fetchone() else "no_record", person)
            today = self.clock().astimezone(WIB).date()
            pending = tuple((d.dose, d.vaccinated_on, (today - d.vaccinated_on).days)
                            for d in doses if d.certificate_id is None)
            issued = tuple(d.dose for d in doses if d.certificate_id is not None)
            return Diagnosis("processing" if pending else "all_issued", person, pending, issued)

        return self.db.run(fn)

    # --- handoff to an officer -------------------------------------------------------------

    def start_handoff(self, conversation_id: str, channel: str, transcript: list[str]) -> Ticket:
        """A handoff ticket carrying the (masked) conversation so far; from now on the
        channels pass this conversation's messages to the officers."""

        def fn(cur):
            session = self.repo._session(cur, conversation_id)
            now = self.clock()
            reference = self._new_reference(cur)
            cur.execute(
                "INSERT INTO tickets (reference, citizen_id, conversation_id, category, description,"
                " channel, created_at, updated_at) VALUES (%s, %s, %s, 'handoff', %s, %s, %s, %s)"
                " RETURNING id",
                (reference, session["citizen_id"] if session else None, conversation_id,
                 "Warga meminta bicara dengan petugas", channel, now, now))
            ticket_id = cur.fetchone()["id"]
            for line in transcript[-40:]:
                cur.execute("INSERT INTO ticket_notes (ticket_id, at, author, note) VALUES (%s, %s, 'transkrip', %s)",
                            (ticket_id, now, for_officers(line, 2000)))
            cur.execute(
                "INSERT INTO handoffs (conversation_id, ticket_id, channel, started_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (conversation_id) DO UPDATE SET ticket_id = EXCLUDED.ticket_id,"
                " channel = EXCLUDED.channel, active = true, started_at = EXCLUDED.started_at, ended_at = NULL",
                (conversation_id, ticket_id, channel, now))
            return Ticket(ticket_id, reference, "handoff", "diterima", now, "", label=self.labels["handoff"])

        return self.db.run(fn)


def officers_available(now: datetime, hours: str = "08:00-20:00", days: str = "0-5") -> tuple[bool, datetime]:
    """Whether officers answer now (WIB), and when they next do. days: weekday range, Monday 0."""
    start_s, end_s = hours.split("-")
    start = datetime.strptime(start_s.strip(), "%H:%M").time()
    end = datetime.strptime(end_s.strip(), "%H:%M").time()
    first, last = (int(d) for d in days.split("-"))
    local = now.astimezone(WIB)
    if first <= local.weekday() <= last and start <= local.time() < end:
        return True, local
    candidate = local
    for _ in range(8):
        opening = datetime.combine(candidate.date(), start, WIB)
        if first <= opening.weekday() <= last and opening > local:
            return False, opening
        candidate = datetime.combine(candidate.date() + timedelta(days=1), start, WIB)
    raise ValueError("no working day configured")


def hari(day: date) -> str:
    return ["Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu"][day.weekday()]
