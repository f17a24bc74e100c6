"""Who may do what in the database: one role per process, each with only what its code runs.

The roles are created once by a superuser (deploy/k8s/postgres/roles.psql); the owner role
(OWNER) owns the schema, runs the migrations, and applies the grants below after every
migration (backend/db.py: migrate), so a table added later is granted in the same step. A
role missing from the server (local development, where everything runs as the embedded
superuser) is skipped.

Each entry is what the code sends, per table; a statement's WHERE or RETURNING needs SELECT.
Verified against the real statements in tests/test_security_deploy.py.
"""

from __future__ import annotations

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
    return existing
