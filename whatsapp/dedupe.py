"""Which WhatsApp message ids were already taken in, remembered in PostgreSQL.

A redelivery is dropped whichever replica gets it, also after a restart; ids are forgotten after
WHATSAPP_DEDUPE_DAYS (at least the 7 days during which Meta redelivers).
"""

from __future__ import annotations

import time

from backend.db import Database

PURGE_EVERY_SECONDS = 3600


class SeenMessages:
    def __init__(self, db: Database, keep_days: int, clock=time.monotonic):
        self.db = db
        self.keep_days = keep_days
        self.clock = clock
        self._last_purge = float("-inf")

    def claim(self, wamids: list[str]) -> set[str]:
        """Record the ids; returns those seen for the first time (the ones to process).

        One statement for the whole batch: the row that is inserted wins, so two replicas
        given the same delivery at the same moment cannot both process it.
        """
        unique = list(dict.fromkeys(wamids))
        if not unique:
            return set()

        def fn(cur):
            cur.execute(
                "INSERT INTO whatsapp_seen_messages (wamid) SELECT unnest(%s::text[])"
                " ON CONFLICT (wamid) DO NOTHING RETURNING wamid", (unique,))
            return {row["wamid"] for row in cur.fetchall()}

        fresh = self.db.run(fn)
        self._purge_now_and_then()
        return fresh

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
