"""The data layer: citizens, vaccinations, verified sessions, certificate links, changes, tickets.

Every method that returns or changes personal data takes the conversation id and checks, in
the same transaction, that the conversation holds a verified, unexpired session
(auth_sessions) and which person it chose. Nothing the dialogue sends (slot values) decides that.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from .db import Database
from .identifiers import mask_nik
from .settings import Settings


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NotVerified(Exception):
    """The conversation has no valid verified session (never had one, expired, or ended)."""


class PersonNotChosen(Exception):
    """Verified, but the account holds several people and none was chosen yet."""


class ChangeRejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Dose:
    dose: int
    vaccine: str
    vaccinated_on: date
    facility: str
    certificate_id: int | None
    certificate_number: str | None


@dataclass(frozen=True)
class Person:
    id: int
    nik: str
    full_name: str
    birth_date: date
    email: str | None
    version: int

    @property
    def masked_nik(self) -> str:
        return mask_nik(self.nik)


def _person(row) -> Person:
    return Person(row["id"], row["nik"].strip(), row["full_name"], row["birth_date"],
                  row["email"], row["version"])


_PERSON_COLUMNS = "c.id, c.nik, c.full_name, c.birth_date, c.email, c.version"

CORRECTION_FIELDS = {"nik": "correction_nik", "birth_date": "correction_birth_date"}


class Repository:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.settings = settings
        self.clock = clock

    # --- verified sessions -------------------------------------------------------------------

    def _session(self, cur, conversation_id: str):
        cur.execute(
            "SELECT account_id, citizen_id, expires_at FROM auth_sessions"
            " WHERE conversation_id = %s AND expires_at > %s",
            (conversation_id, self.clock()),
        )
        return cur.fetchone()

    def start_session(self, cur, conversation_id: str, account_id: int) -> None:
        """Called by the OTP service inside the transaction that consumed a correct code."""
        now = self.clock()
        cur.execute("SELECT id FROM citizens WHERE account_id = %s", (account_id,))
        people = cur.fetchall()
        chosen = people[0]["id"] if len(people) == 1 else None
        cur.execute(
            "INSERT INTO auth_sessions (conversation_id, account_id, citizen_id, verified_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (conversation_id) DO UPDATE SET account_id = EXCLUDED.account_id,"
            " citizen_id = EXCLUDED.citizen_id, verified_at = EXCLUDED.verified_at,"
            " expires_at = EXCLUDED.expires_at",
            (conversation_id, account_id, chosen, now,
             now + timedelta(seconds=self.settings.session_ttl_seconds)),
        )

    def session_state(self, conversation_id: str) -> str:
        """"none" (verify first), "choose_person" or "ready"."""

        def fn(cur):
            row = self._session(cur, conversation_id)
            if row is None:
                return "none"
            return "ready" if row["citizen_id"] is not None else "choose_person"

        return self.db.run(fn)

    def end_session(self, conversation_id: str) -> bool:
        def fn(cur):
            cur.execute("DELETE FROM auth_sessions WHERE conversation_id = %s", (conversation_id,))
            return cur.rowcount > 0

        return self.db.run(fn)

    def people(self, conversation_id: str) -> list[Person]:
        """The people of the verified account, in a stable order."""

        def fn(cur):
            session = self._session(cur, conversation_id)
            if session is None:
                raise NotVerified()
            cur.execute(
                f"SELECT {_PERSON_COLUMNS} FROM citizens c WHERE c.account_id = %s ORDER BY c.id",
                (session["account_id"],),
            )
            return [_person(row) for row in cur.fetchall()]

        return self.db.run(fn)

    def choose_person(self, conversation_id: str, citizen_id: int) -> Person:
        def fn(cur):
            session = self._session(cur, conversation_id)
            if session is None:
                raise NotVerified()
            cur.execute(
                f"SELECT {_PERSON_COLUMNS} FROM citizens c WHERE c.id = %s AND c.account_id = %s",
                (citizen_id, session["account_id"]),
            )
            row = cur.fetchone()
            if row is None:
                raise NotVerified()  # not a person of this account: never reveal anything about it
            cur.execute(
                "UPDATE auth_sessions SET citizen_id = %s WHERE conversation_id = %s",
                (citizen_id, conversation_id),
            )
            return _person(row)

        return self.db.run(fn)

    def _current_person(self, cur, conversation_id: str, *, lock: bool = False) -> Person:
        session = self._session(cur, conversation_id)
        if session is None:
            raise NotVerified()
        if session["citizen_id"] is None:
            raise PersonNotChosen()
        cur.execute(
            f"SELECT {_PERSON_COLUMNS} FROM citizens c WHERE c.id = %s" + (" FOR UPDATE" if lock else ""),
            (session["citizen_id"],),
        )
        return _person(cur.fetchone())

    def current_person(self, conversation_id: str) -> Person:
        return self.db.run(self._current_person, conversation_id)

    # --- vaccinations and certificates -------------------------------------------------------

    def _doses(self, cur, citizen_id: int) -> list[Dose]:
        cur.execute(
            "SELECT v.dose, v.vaccine, v.vaccinated_on, v.facility,"
            " c.id AS certificate_id, c.certificate_number"
            " FROM vaccinations v LEFT JOIN certificates c ON c.vaccination_id = v.id"
            " WHERE v.citizen_id = %s ORDER BY v.dose",
            (citizen_id,),
        )
        return [Dose(**row) for row in cur.fetchall()]

    def vaccination_record(self, conversation_id: str) -> tuple[Person, list[Dose]]:
        def fn(cur):
            person = self._current_person(cur, conversation_id)
            return person, self._doses(cur, person.id)

        return self.db.run(fn)

    def create_certificate_link(self, conversation_id: str, dose: int) -> tuple[Person, Dose, str]:
        """A fresh download token for the chosen person's certificate of that dose.

        Raises LookupError("not_recorded") or LookupError("not_issued") when there is nothing
        to download; the audit log records every link handed out.
        """

        def fn(cur):
            person = self._current_person(cur, conversation_id)
            match = [d for d in self._doses(cur, person.id) if d.dose == dose]
            if not match:
                raise LookupError("not_recorded")
            record = match[0]
            if record.certificate_id is None:
                raise LookupError("not_issued")
            token = secrets.token_urlsafe(32)
            now = self.clock()
            cur.execute(
                "INSERT INTO certificate_links (token_hash, certificate_id, conversation_id,"
                " created_at, expires_at) VALUES (%s, %s, %s, %s, %s)",
                (hashlib.sha256(token.encode()).digest(), record.certificate_id, conversation_id,
                 now, now + timedelta(seconds=self.settings.certificate_link_ttl_seconds)),
            )
            self._audit(cur, conversation_id, person, "certificate_download",
                        {"dose": dose, "certificate_number": record.certificate_number})
            return person, record, token

        return self.db.run(fn)

    def certificate_by_token(self, token: str) -> dict | None:
        """What the PDF shows, for a valid, unexpired token; None for anything else."""
        if not token or len(token) > 100:
            return None

        def fn(cur):
            cur.execute(
                "SELECT c.id AS certificate_id, c.certificate_number, c.issued_at,"
                " v.dose, v.vaccine, v.vaccinated_on, v.facility,"
                " p.full_name, p.nik, p.birth_date, p.version"
                " FROM certificate_links l JOIN certificates c ON c.id = l.certificate_id"
                " JOIN vaccinations v ON v.id = c.vaccination_id"
                " JOIN citizens p ON p.id = v.citizen_id"
                " WHERE l.token_hash = %s AND l.expires_at > %s",
                (hashlib.sha256(token.encode()).digest(), self.clock()),
            )
            return cur.fetchone()

        row = self.db.run(fn)
        return dict(row) if row else None

    # --- changes of personal data ------------------------------------------------------------

    def _audit(self, cur, conversation_id: str, person: Person, action: str, detail: dict) -> None:
        cur.execute(
            "INSERT INTO audit_log (at, conversation_id, actor, citizen_id, action, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (self.clock(), conversation_id, f"NIK {person.masked_nik}", person.id, action,
             json.dumps(detail, default=str)),
        )

    def _update_person(self, conversation_id: str, column: str, value: str, action: str) -> Person:
        assert column in ("full_name", "email")  # column names cannot be query parameters

        def fn(cur):
            person = self._current_person(cur, conversation_id, lock=True)
            old = getattr(person, column)
            cur.execute(
                f"UPDATE citizens SET {column} = %s, version = version + 1, updated_at = %s"
                " WHERE id = %s",
                (value, self.clock(), person.id),
            )
            self._audit(cur, conversation_id, person, action, {"old": old, "new": value})
            return self._current_person(cur, conversation_id)

        return self.db.run(fn)

    def change_name(self, conversation_id: str, new_name: str) -> Person:
        return self._update_person(conversation_id, "full_name", new_name, "change_name")

    def change_email(self, conversation_id: str, new_email: str) -> Person:
        return self._update_person(conversation_id, "email", new_email, "change_email")

    def account_phone(self, conversation_id: str) -> str:
        def fn(cur):
            session = self._session(cur, conversation_id)
            if session is None:
                raise NotVerified()
            cur.execute("SELECT phone FROM accounts WHERE id = %s", (session["account_id"],))
            return cur.fetchone()["phone"]

        return self.db.run(fn)

    def change_phone(self, cur, conversation_id: str, new_phone: str) -> None:
        """Runs inside the transaction that consumed the OTP sent to new_phone."""
        person = self._current_person(cur, conversation_id)
        session = self._session(cur, conversation_id)
        cur.execute("SELECT id FROM accounts WHERE phone = %s", (new_phone,))
        taken = cur.fetchone()
        if taken is not None and taken["id"] != session["account_id"]:
            raise ChangeRejected("phone_taken")
        cur.execute(
            "UPDATE accounts SET phone = %s, updated_at = %s WHERE id = %s",
            (new_phone, self.clock(), session["account_id"]),
        )
        self._audit(cur, conversation_id, person, "change_phone",
                    {"new_phone_last4": new_phone[-4:]})

    def open_correction_request(self, conversation_id: str, field: str) -> tuple[Person, str]:
        """A ticket for a NIK or date-of-birth correction, which needs an officer and documents."""
        category = CORRECTION_FIELDS[field]

        def fn(cur):
            person = self._current_person(cur, conversation_id)
            cur.execute("SELECT nextval('ticket_number_seq') AS n")
            now = self.clock()
            reference = f"PL-{now:%Y}-{cur.fetchone()['n']:06d}"
            cur.execute(
                "INSERT INTO tickets (reference, citizen_id, conversation_id, category, description,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (reference, person.id, conversation_id, category,
                 f"Permintaan koreksi {field} melalui chatbot", now, now),
            )
            self._audit(cur, conversation_id, person, "correction_request",
                        {"field": field, "reference": reference})
            return person, reference

        return self.db.run(fn)
