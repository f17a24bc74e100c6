"""Which WhatsApp message ids were already taken in, and which of them still wait for an answer,
remembered in PostgreSQL.

A redelivery is dropped whichever replica gets it, also after a restart; ids are forgotten after
WHATSAPP_DEDUPE_DAYS (at least the 7 days during which Meta redelivers).

Meta gets its 200 as soon as a message is recorded here (its latency guideline is a median
under 250 ms, well below a turn), so a message is kept *pending*, with what is needed to run its
turn again, until its turn ran. A turn that failed (Rasa restarting, the database down, a
timeout) is tried again from this table once things are back, by whichever replica takes it
first; a process killed mid-turn leaves its messages to be taken up when their lease ends.
Keeping the message ourselves rather than answering Meta non-2xx also means the citizen gets
the answer seconds after an outage, not after Meta's backoff (up to hours).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from backend.db import Database

PURGE_EVERY_SECONDS = 3600
RETRY_MAX_SECONDS = 300.0
GIVE_UP_HOURS = 24  # a question unanswered for a day is not answered out of the blue later


@dataclass(frozen=True)
class Pending:
    wamid: str
    message: dict
    attempts: int


class SeenMessages:
    def __init__(self, db: Database, keep_days: int, clock=time.monotonic, *, lease_seconds: float = 60.0):
        self.db = db
        self.keep_days = keep_days
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._last_purge = float("-inf")

    def claim(self, wamids: list[str], messages: dict[str, dict] | None = None) -> set[str]:
        """Record the ids; returns those seen for the first time (the ones to process). With
        `messages` (by id), each is kept pending, leased to this process, until `answered`.

        One statement for the whole batch: the row that is inserted wins, so two replicas
        given the same delivery at the same moment cannot both process it.
        """
        unique = list(dict.fromkeys(wamids))
        if not unique:
            return set()
        kept = [Jsonb(messages[w]) if messages and w in messages else None for w in unique]

        def fn(cur):
            cur.execute(
                "INSERT INTO whatsapp_seen_messages (wamid, message, retry_at)"
                " SELECT w, m, CASE WHEN m IS NULL THEN NULL ELSE now() + make_interval(secs => %s) END"
                " FROM unnest(%s::text[], %s::jsonb[]) AS t(w, m)"
                " ON CONFLICT (wamid) DO NOTHING RETURNING wamid", (self.lease_seconds, unique, kept))
            return {row["wamid"] for row in cur.fetchall()}

        fresh = self.db.run(fn)
        self._purge_now_and_then()
        return fresh

    def answered(self, wamid: str) -> None:
        """The turn ran: nothing is tried again, and the message's content is dropped."""
        self.db.run(lambda cur: cur.execute(
            "UPDATE whatsapp_seen_messages SET retry_at = NULL, message = NULL WHERE wamid = %s", (wamid,)))

    def failed(self, wamid: str, attempts: int, retry_seconds: float) -> None:
        """Try again after retry_seconds, doubled for each earlier attempt (up to 5 minutes)."""
        delay = min(RETRY_MAX_SECONDS, retry_seconds * 2 ** min(20, max(0, attempts - 1)))
        self.db.run(lambda cur: cur.execute(
            "UPDATE whatsapp_seen_messages SET retry_at = now() + make_interval(secs => %s)"
            " WHERE wamid = %s AND retry_at IS NOT NULL", (delay, wamid)))

    def take_due(self, limit: int = 50) -> tuple[list[Pending], int]:
        """The pending messages whose time has come, leased to this process (SKIP LOCKED: two
        replicas never take the same one), oldest first; and how many were given up (older than
        GIVE_UP_HOURS)."""
        def fn(cur):
            cur.execute(
                "UPDATE whatsapp_seen_messages SET retry_at = NULL, message = NULL"
                " WHERE retry_at IS NOT NULL AND received_at < now() - make_interval(hours => %s)",
                (GIVE_UP_HOURS,))
            given_up = cur.rowcount
            cur.execute(
                "UPDATE whatsapp_seen_messages SET attempts = attempts + 1,"
                " retry_at = now() + make_interval(secs => %s)"
                " WHERE wamid IN (SELECT s.wamid FROM whatsapp_seen_messages s"
                "   WHERE s.retry_at IS NOT NULL AND s.retry_at <= now() AND s.message IS NOT NULL"
                # A sender's messages are answered in order: none before an earlier one of theirs
                # that is still waiting (its retry not due yet, or leased to another process).
                "   AND NOT EXISTS (SELECT 1 FROM whatsapp_seen_messages e"
                "     WHERE e.retry_at > now() AND e.message IS NOT NULL"
                "     AND e.message->>'wa_id' = s.message->>'wa_id' AND e.received_at < s.received_at)"
                "   ORDER BY s.received_at LIMIT %s FOR UPDATE OF s SKIP LOCKED)"
                " RETURNING wamid, message, attempts, received_at", (self.lease_seconds, limit))
            rows = sorted(cur.fetchall(), key=lambda row: row["received_at"])
            return [Pending(r["wamid"], r["message"], r["attempts"]) for r in rows], given_up

        return self.db.run(fn)

    def _purge_now_and_then(self) -> None:
        now = self.clock()
        if now - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = now

        def fn(cur):
            cur.execute("DELETE FROM whatsapp_seen_messages WHERE received_at < now() - make_interval(days => %s)",
                        (self.keep_days,))
            return cur.rowcount

        self.db.run(fn)
