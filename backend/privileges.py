"""Who may do what in the database: one role per process, each with only what its code runs.

The roles are created once by a superuser (deploy/k8s/postgres/roles.psql); the owner role
(OWNER) owns the schema, runs the migrations, and applies the grants below after every
migration (backend/db.py: migrate), so a table added later is granted in the same step. A
role missing from the server (local development, where everything runs as the embedded
superuser) is skipped.

Each entry is what the code sends, per table; a statement's WHERE or RETURNING needs SELECT.
Verified against the real statements in tests/test_security_deploy.py.

With DB_SESSION_SETTINGS=role (PgBouncer in front, deploy/README.md) the pools send no startup
options, and the same step gives each role its timeouts as defaults in this database instead.
"""

from __future__ import annotations

import os

from psycopg import sql

OWNER = "vaksin_owner"
ACTIONS = "vaksin_actions"
RASA = "vaksin_rasa"
RETENTION = "vaksin_retention"
BACKUP = "vaksin_backup"

GRANTS: dict[str, dict[str, str]] = {
    # The action server: backend/repository.py, otp.py, tickets.py (actions/).
    ACTIONS: {
        "schema_migrations": "SELECT",          # migrate() checks that nothing is pending
        "accounts": "SELECT, UPDATE",           # phone change
        "citizens": "SELECT, UPDATE",           # name and e-mail changes
        "vaccinations": "SELECT",
        "certificates": "SELECT",
        "otp_challenges": "SELECT, INSERT, UPDATE",
        "otp_deliveries": "SELECT, INSERT, UPDATE, DELETE",   # the delivery queue (otp.py)
        "auth_sessions": "SELECT, INSERT, UPDATE, DELETE",
        "certificate_links": "SELECT, INSERT",
        "audit_log": "INSERT",                  # written, never read back by the service
        "tickets": "SELECT, INSERT",
        "ticket_notes": "SELECT, INSERT",
        "handoffs": "SELECT, INSERT, UPDATE",   # INSERT ... ON CONFLICT DO UPDATE
    },
    # Rasa's process: its tracker store (events) and the channels' gate and dedupe
    # (backend/officer_desk.py channel_gate, whatsapp/dedupe.py). No citizen data.
    RASA: {
        "schema_migrations": "SELECT",
        "events": "SELECT, INSERT",
        "whatsapp_seen_messages": "SELECT, INSERT, UPDATE, DELETE",  # UPDATE: pending -> answered
        "notifications": "SELECT, UPDATE",
        "handoffs": "SELECT",
        "ticket_notes": "INSERT",
        "tickets": "SELECT (id), UPDATE (updated_at)",   # touch a handed-over ticket, read nothing
    },
    # The retention job (backend/retention.py): deletes what is older than RETENTION_DAYS.
    RETENTION: {table: "SELECT, DELETE" for table in
                ("events", "otp_challenges", "otp_deliveries", "auth_sessions", "certificate_links",
                 "whatsapp_seen_messages")},
    # The nightly backup (deploy/k8s/backup-cronjob.yaml, pg_dump): reads every table and
    # sequence, writes nothing (READ_ALL below; roles.psql also makes its transactions read-only).
    BACKUP: {},
}
# Roles given SELECT on every table and sequence of the schema after each migration, so that a
# table added later is in the next dump without a change here.
READ_ALL = (BACKUP,)
# Sequences used by name (nextval); those behind serial columns follow INSERT automatically.
SEQUENCES: dict[str, tuple[str, ...]] = {ACTIONS: ("ticket_number_seq",)}
# The owner's statements in the migration (python -m backend.migrate) may outlast the services'
# short timeout: an index on a month of conversation events.
MIGRATION_TIMEOUT_MS = 30 * 60 * 1000


def apply_grants(cur) -> list[str]:
    """Make each existing role's privileges exactly GRANTS: everything revoked, then granted.
    Run by the owner (or a superuser) in the migration's transaction; returns the roles done."""
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", (list(GRANTS),))
    existing = [row["rolname"] for row in cur.fetchall()]
    for role in existing:
        who = sql.Identifier(role)
        cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(who))
        cur.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(who))
        for table, privileges in GRANTS[role].items():
            # The privilege lists are constants of this module, never input.
            cur.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), sql.Identifier(table), who))
            if "INSERT" in privileges:
                # The sequences behind the table's serial columns (named by the server, quoted).
                cur.execute("SELECT s.oid::regclass::text AS s FROM pg_class s JOIN pg_depend d ON d.objid = s.oid"
                            " WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND d.refobjid = %s::regclass",
                            (table,))
                for row in cur.fetchall():
                    cur.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.SQL(row["s"]), who))
        for sequence in SEQUENCES.get(role, ()):
            cur.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(sequence), who))
        if role in READ_ALL:
            cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(who))
            cur.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(who))
    if os.environ.get("DB_SESSION_SETTINGS", "startup") == "role":
        apply_session_defaults(cur, session_defaults())
    return existing


def session_defaults(env: dict | None = None) -> dict[str, dict[str, int]]:
    """Per role, what the pools of the process connecting as it send as startup options
    (backend/db.py: session_options), for DB_SESSION_SETTINGS=role. The backup's pg_dump sets
    its own."""
    from .db import Database
    from .retention import STATEMENT_TIMEOUT_MS as RETENTION_TIMEOUT_MS
    from .settings import _int

    env = dict(os.environ if env is None else env)
    actions = _int(env, "DB_STATEMENT_TIMEOUT_MS", 3000)  # backend/settings.py
    # Rasa's channels use the pool's default; the tracker store sent none, and gets this too.
    rasa = Database.__init__.__kwdefaults__["statement_timeout_ms"]

    def timeouts(ms: int) -> dict[str, int]:
        return {"statement_timeout": ms, "lock_timeout": ms}

    return {OWNER: timeouts(MIGRATION_TIMEOUT_MS), ACTIONS: timeouts(actions), RASA: timeouts(rasa),
            RETENTION: timeouts(RETENTION_TIMEOUT_MS)}


def apply_session_defaults(cur, defaults: dict[str, dict[str, int]]) -> list[str]:
    """ALTER ROLE ... IN DATABASE (this one) SET, for each existing role of `defaults`. The owner
    may not alter other roles (NOCREATEROLE), but any role may set its own defaults: the owner,
    a member of the service roles (roles.psql), does it as each of them in turn. PgBouncer's
    server connections opened before keep the old values (deploy/README.md: RECONNECT)."""
    cur.execute("SELECT rolname, pg_has_role(current_user, oid, 'MEMBER') AS member FROM pg_roles"
                " WHERE rolname = ANY(%s) ORDER BY rolname", (list(defaults),))
    existing = {row["rolname"]: row["member"] for row in cur.fetchall()}
    strangers = sorted(role for role, member in existing.items() if not member)
    if strangers:
        raise PermissionError(f"DB_SESSION_SETTINGS=role: this role may not set the defaults of {strangers}; "
                              "run deploy/k8s/postgres/roles.psql again (it makes the owner their member)")
    cur.execute("SELECT current_database() AS name")
    database = sql.Identifier(cur.fetchone()["name"])
    for role in existing:
        who = sql.Identifier(role)
        cur.execute(sql.SQL("SET LOCAL ROLE {}").format(who))
        for name, value in defaults[role].items():
            # Names and values are this module's own (integers), never input.
            cur.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                who, database, sql.Identifier(name), sql.Literal(str(value))))
        cur.execute("RESET ROLE")
    return list(existing)
