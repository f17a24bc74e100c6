"""The retention job (`make purge`): deletes what is no longer needed after RETENTION_DAYS.

Deleted: every conversation event (Rasa's tracker events) older than that, whatever the
conversation's last event (the start of a session still going on excepted), OTP challenges,
OTP codes still queued for delivery after their expiry (whatever their age), ended or expired
verified sessions, expired certificate links, and seen WhatsApp message ids. Kept: citizens'
records, tickets and the audit log, which are the service's own records rather than
conversation data.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timedelta, timezone
from functools import partial

from . import secret_rules
from .db import Database

log = logging.getLogger(__name__)

# Rows per transaction: each batch is short, so the job never holds locks or a transaction
# open for long, and whatever it has deleted stays deleted if it stops halfway.
BATCH = 5000
# A nightly batch job, not a citizen's turn: finding the sessions still going on reads a day of
# Rasa's events, which may take longer than the 3 s the services allow a statement.
STATEMENT_TIMEOUT_MS = 30 * 60 * 1000

# (table, SQL condition on rows to delete, with %(cutoff)s); tables created by other parts
# (the WhatsApp channel's seen ids) are skipped when they do not exist.
RULES = [
    # Codes still queued after their expiry (no action server ran to drop them): useless at once.
    ("otp_deliveries", "expires_at < %(now)s"),
    ("otp_challenges", "created_at < %(cutoff)s"),
    ("auth_sessions", "expires_at < %(cutoff)s"),
    ("certificate_links", "expires_at < %(cutoff)s"),
    ("whatsapp_seen_messages", "received_at < %(cutoff)s"),
]


class PurgeFailed(RuntimeError):
    """Some tables could not be purged; the others were (counts in .deleted)."""

    def __init__(self, failed: dict[str, str], deleted: dict[str, int]):
        super().__init__("retention failed for " + ", ".join(f"{t} ({e})" for t, e in failed.items()))
        self.failed, self.deleted = failed, deleted


def purge(db: Database, retention_days: int, now: datetime | None = None) -> dict[str, int]:
    """Delete what is older than retention_days; returns the number of rows per table.

    Each table is purged on its own, in batches of their own transactions: a table that fails
    (a renamed column, a lock held too long) is logged and the others are still purged, then
    PurgeFailed is raised so that the job ends in failure.
    """
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retention_days)
    deleted: dict[str, int] = {}
    failed: dict[str, str] = {}
    jobs = {"events": _purge_events}
    jobs.update({table: partial(_purge_rows, table=table, condition=condition, now=now)
                 for table, condition in RULES})
    for table, job in jobs.items():
        try:
            if _exists(db, table):
                deleted[table] = job(db, cutoff)
        except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
            log.error("retention: %s not purged (%s)", table, type(exc).__name__)
            failed[table] = type(exc).__name__
    if failed:
        raise PurgeFailed(failed, deleted)
    return deleted


def _exists(db: Database, table: str) -> bool:
    return db.run(lambda cur: (cur.execute("SELECT to_regclass(%s) AS t", (table,)), cur.fetchone()["t"])[1]) is not None


def _purge_rows(db: Database, cutoff: datetime, *, table: str, condition: str, now: datetime) -> int:
    # Table names and conditions come from RULES above, never from input.
    statement = (f"DELETE FROM {table} WHERE ctid IN "
                 f"(SELECT ctid FROM {table} WHERE {condition} LIMIT %(batch)s)")
    total = 0
    while True:
        count = db.run(lambda cur: (cur.execute(statement, {"cutoff": cutoff, "now": now, "batch": BATCH}), cur.rowcount)[1])
        total += count
        if count < BATCH:
            return total


def _purge_events(db: Database, cutoff: datetime) -> int:
    """Rasa's events older than the cutoff, whatever the conversation's last event: a citizen
    who keeps writing keeps only the last RETENTION_DAYS. Oldest first, BATCH rows per short
    transaction (through the index on the time, migration 0007), so that no lock or transaction
    is held for long. Events newer than the cutoff, a citizen's new messages included, are
    never touched.

    Kept past the cutoff: the start of a session still going on (its `action_session_start` and
    `session_started`, which hold no message), so that Rasa reads the conversation from that
    session's start as before (rasa_server/tracker_store.py) and the conversation carries on."""
    epoch = cutoff.timestamp()
    keep = _open_session_starts(db, epoch)
    statement = ("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE timestamp < %(epoch)s"
                 " AND id <> ALL(%(keep)s) ORDER BY timestamp LIMIT %(batch)s)")
    total = 0
    while True:
        count = db.run(lambda cur: (cur.execute(statement, {"epoch": epoch, "keep": keep, "batch": BATCH}),
                                    cur.rowcount)[1])
        total += count
        if count < BATCH:
            return total


def _open_session_starts(db: Database, epoch: float) -> list[int]:
    """The ids of the session-start events of sessions begun before the cutoff that have events
    after it (and no later session start): at most two rows per such conversation."""
    rows = db.run(lambda cur: (cur.execute(
        "WITH latest AS (SELECT DISTINCT ON (sender_id) id, sender_id FROM events"
        "   WHERE timestamp < %(epoch)s AND type_name = 'session_started'"
        "   ORDER BY sender_id, timestamp DESC, id DESC)"
        " SELECT l.id, a.id AS action_id FROM latest l"
        " LEFT JOIN LATERAL (SELECT id FROM events WHERE sender_id = l.sender_id AND id < l.id"
        "   AND type_name = 'action' AND action_name = 'action_session_start' ORDER BY id DESC LIMIT 1) a ON true"
        " WHERE EXISTS (SELECT 1 FROM events n WHERE n.sender_id = l.sender_id AND n.timestamp >= %(epoch)s)"
        " AND NOT EXISTS (SELECT 1 FROM events n WHERE n.sender_id = l.sender_id AND n.timestamp >= %(epoch)s"
        "   AND n.type_name = 'session_started')", {"epoch": epoch}), cur.fetchall())[1])
    return [i for row in rows for i in (row["id"], row["action_id"]) if i is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=int(os.environ.get("RETENTION_DAYS", "30")))
    args = parser.parse_args()
    from pathlib import Path

    from .settings import PROJECT_ROOT, database_url

    secret_rules.check(os.environ, secret_rules.DATABASE_ONLY)
    url = database_url(Path(os.environ.get("VAR_DIR") or PROJECT_ROOT / "var"))
    db = Database(url, max_connections=1, statement_timeout_ms=STATEMENT_TIMEOUT_MS)
    try:
        deleted = purge(db, args.days)
    except PurgeFailed as exc:
        deleted, status = exc.deleted, f"; failed: {', '.join(exc.failed)}"
    else:
        status = ""
    finally:
        db.close()
    print(f"retention {args.days} days: " + ", ".join(f"{t} {n}" for t, n in deleted.items()) + status)
    if status:
        sys.exit(1)


if __name__ == "__main__":
    main()
