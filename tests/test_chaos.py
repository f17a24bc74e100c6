"""The chaos run's parts that need no load (tools/chaos.py): its schedule, the per-fault
accounting of turns, and the consistency checks against a real PostgreSQL."""

from __future__ import annotations

from actions import wording
from backend.tickets import Tickets
from test_tickets import login
from tools.chaos import POSTGRES_DOWN_S, Seen, Turn, account, check_consistency, classify, schedule


def test_the_schedule_spreads_the_faults_in_order_and_redis_only_with_two_workers():
    plan = schedule(240, workers=2)
    assert [f.name for f in plan] == ["kill_actions", "kill_rasa", "stop_postgres", "kill_redis"]
    assert [f.at for f in plan] == [48, 96, 144, 192]
    assert [f.hold for f in plan] == [0, 0, POSTGRES_DOWN_S, 0] and POSTGRES_DOWN_S == 10
    one = schedule(120, workers=1)
    assert [f.name for f in one] == ["kill_actions", "kill_rasa", "stop_postgres"]
    assert [f.at for f in one] == [30, 60, 90]


def test_a_turn_is_ok_an_apology_refused_or_unanswered():
    assert classify(200, ["Halo!"]) == "ok"
    assert classify(200, ["Maaf, layanan sedang gangguan, silakan coba lagi sebentar lagi."]) == "apology"
    assert classify(None, []) == "refused"
    assert classify(200, []) == "none"
    assert classify(500, ["Internal Server Error"]) == "none"
    assert classify(0, []) == "none"


def test_turns_are_counted_per_fault_with_the_time_until_answers_are_normal_again():
    faults = [{"name": "kill_actions", "at": 10.0}, {"name": "kill_rasa", "at": 20.0}]
    turns = [Turn(1, 2, "ok"), Turn(5, 9.9, "ok"),                                   # before
             Turn(9.5, 10.5, "apology"), Turn(10.6, 12.5, "apology"), Turn(13, 14, "ok"),  # actions
             Turn(19.5, 20.1, "none", "ServerDisconnectedError"), Turn(20.2, 20.3, "refused"), Turn(21, 24.0, "ok"),
             Turn(25, 26.4, "refused"), Turn(26, 26.5, "none", "http 502"),
             Turn(27.5, 29.5, "ok"), Turn(22, 29.6, "ok")]                               # rasa: one slow
    rows = account(turns, faults, end=30)
    assert rows[0] == {"fault": "before_faults", "at_s": 0.0, "turns": 2, "ok": 2, "slow": 0, "apology": 0,
                       "refused": 0, "none": 0, "none_in_flight": 0, "none_why": {}, "recovery_s": 0.0}
    assert rows[1] == {"fault": "kill_actions", "at_s": 10.0, "turns": 3, "ok": 1, "slow": 0, "apology": 2,
                       "refused": 0, "none": 0, "none_in_flight": 0, "none_why": {}, "recovery_s": 2.5}
    # An answer after 7.6 s is not normal yet: answers are normal again from 29.6 s on.
    # Of the unanswered turns, the one in flight when Rasa died, and one after: why, by kind.
    assert rows[2] == {"fault": "kill_rasa", "at_s": 20.0, "turns": 7, "ok": 3, "slow": 1, "apology": 0,
                       "refused": 2, "none": 2, "none_in_flight": 1, "none_why": {"http 502": 1}, "recovery_s": 9.6}


def test_the_checks_catch_a_lost_change_a_doubled_ticket_a_late_otp_and_a_missing_audit_row(backend, outbox):
    login(backend, outbox, "chaos-a", "+6281234567002", person=0)
    backend.repo.change_email("chaos-a", "baru@example.com")
    tickets = Tickets(backend.repo, wording.domain())
    reference = tickets.open("chaos-a", "other", "aplikasi error terus", "rest").reference
    seen = Seen(changes=[{"conversation": "chaos-a", "phone": "+6281234567002", "email": "baru@example.com"}],
                tickets=[{"conversation": "chaos-a", "reference": reference}])
    clean = check_consistency(backend.db, seen)
    assert clean["consistent"] and clean["checked"] == {"confirmed_changes": 1, "tickets_given": 1}
    assert not any(clean["problems"].values())

    # A change a citizen was told about that never reached the database, the same report stored
    # twice, a code consumed after it expired, a citizen changed without an audit row.
    seen.changes.append({"conversation": "chaos-b", "phone": "+6281234567005", "email": "hilang@example.com"})
    seen.tickets.append({"conversation": "chaos-b", "reference": "PL-2026-999999"})

    def spoil(cur):
        cur.execute("INSERT INTO tickets (reference, citizen_id, conversation_id, category, description, channel,"
                    " created_at, updated_at) SELECT 'PL-2026-999998', citizen_id, conversation_id, category,"
                    " description, channel, created_at, updated_at FROM tickets WHERE reference = %s", (reference,))
        cur.execute("UPDATE otp_challenges SET consumed_at = expires_at + interval '1 second'"
                    " WHERE conversation_id = 'chaos-a' RETURNING id")
        late = cur.fetchone()["id"]
        cur.execute("UPDATE citizens c SET version = version + 1 FROM accounts a"
                    " WHERE a.id = c.account_id AND a.phone = '+6281234567005' RETURNING c.id")
        return late, cur.fetchone()["id"]

    late, unaudited = backend.db.run(spoil)
    found = check_consistency(backend.db, seen)
    assert not found["consistent"]
    assert found["problems"] == {"lost_changes": 1, "unaudited_changes": 1, "lost_tickets": 1, "doubled_tickets": 1,
                                 "otp_used_after_expiry": 1, "changes_without_audit_row": 1}
    assert found["examples"]["lost_changes"] == ["chaos-b"]
    assert found["examples"]["doubled_tickets"] == ["chaos-a"]
    assert found["examples"]["otp_used_after_expiry"] == [late]
    assert found["examples"]["changes_without_audit_row"] == [unaudited]
    assert found["examples"]["lost_tickets"] == ["PL-2026-999999"]
