"""The schema migration, run as the database's owner role before the services start.

    python -m backend.migrate              # apply what is pending, then the roles' grants
    python -m backend.migrate --wait 600   # only wait (any role) until nothing is pending

In deploy/ the migration Job runs the first with the owner's credentials, once per release, and
the pods of actions and Rasa the second in an init container with their own; the services' roles may not change
the schema (backend/privileges.py). Locally `make run` migrates as the embedded superuser.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from . import secret_rules
from .db import Database, DatabaseUnavailable, migrate, pending_migrations
from .privileges import MIGRATION_TIMEOUT_MS

log = logging.getLogger(__name__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="do not migrate: wait until no migration is pending (exit 1 after SECONDS)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    secret_rules.check(os.environ, secret_rules.DATABASE_ONLY)
    from .settings import PROJECT_ROOT, database_url

    # The migration's statements may outlast the services' short timeout; waiting stays short.
    db = Database(database_url(Path(os.environ.get("VAR_DIR") or PROJECT_ROOT / "var")), max_connections=1,
                  statement_timeout_ms=MIGRATION_TIMEOUT_MS if args.wait is None else 3000)
    try:
        if args.wait is None:
            try:
                applied = migrate(db, grant=True)
            except PermissionError as exc:  # the roles' defaults (DB_SESSION_SETTINGS=role)
                print(f"migration rolled back: {exc}", file=sys.stderr)
                return 1
            print(f"migrations applied: {', '.join(applied) or 'none pending'}; grants applied")
            return 0
        deadline = time.monotonic() + args.wait
        while True:
            try:
                pending = pending_migrations(db)
                if not pending:
                    print("schema up to date")
                    return 0
                reason = f"{len(pending)} migrations pending"
            except DatabaseUnavailable as exc:
                reason = f"database unavailable ({exc})"
            if time.monotonic() > deadline:
                print(f"gave up waiting: {reason}", file=sys.stderr)
                return 1
            time.sleep(2)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
