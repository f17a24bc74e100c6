"""The retention job (`make purge`): deletes what is no longer needed after RETENTION_DAYS.

Deleted: conversations (Rasa's tracker events) whose last event is older than that, OTP
challenges, ended or expired verified sessions, expired certificate links, and seen
WhatsApp message ids. Kept: citizens' records, tickets and the audit log, which are the
service's own records rather than conversation data.
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import datetime, timedelta, timezone

from .db import Database

log = logging.getLogger(__name__)

# (table, SQL condition on rows to delete, with %(cutoff)s); tables created by other parts
# (Rasa's events, the WhatsApp channel's seen ids) are skipped when they do not exist.
RULES = [
    ("events", "sender_id IN (SELECT sender_id FROM events GROUP BY sender_id"
               " HAVING max(timestamp) < extract(epoch FROM %(cutoff)s::timestamptz))"),
    ("otp_challenges", "created_at < %(cutoff)s"),
    ("auth_sessions", "expires_at < %(cutoff)s"),
    ("certificate_links", "expires_at < %(cutoff)s"),
    ("whatsapp_seen_messages", "received_at < %(cutoff)s"),
]


def purge(db: Database, retention_days: int, now: datetime | None = None) -> dict[str, int]:
    """Delete what is older than retention_days; returns the number of rows per table."""
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)

    def fn(cur) -> dict[str, int]:
        deleted = {}
        for table, condition in RULES:
            cur.execute("SELECT to_regclass(%s) AS t", (table,))
            if cur.fetchone()["t"] is None:
                continue
            # Table names come from RULES above, never from input.
            cur.execute(f"DELETE FROM {table} WHERE {condition}", {"cutoff": cutoff})
            deleted[table] = cur.rowcount
        return deleted

    return db.run(fn)


def main() -> None:
    from tools.stack import database_url  # the same database as `make run`

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=int(os.environ.get("RETENTION_DAYS", "30")))
    args = parser.parse_args()
    from pathlib import Path

    from .settings import PROJECT_ROOT

    url = database_url(Path(os.environ.get("VAR_DIR") or PROJECT_ROOT / "var"))
    db = Database(url)
    deleted = purge(db, args.days)
    db.close()
    print(f"retention {args.days} days: " + ", ".join(f"{t} {n}" for t, n in deleted.items()))


if __name__ == "__main__":
    main()
