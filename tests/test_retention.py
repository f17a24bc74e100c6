"""The retention job (backend/retention.py): what it deletes, in batches, and how a failing rule
fails the job; and retention by event time: every conversation event older than RETENTION_DAYS
goes, whatever the conversation's last event, and the conversation carries on, in Rasa's tracker
store and in the real Rasa over the REST channel."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from backend.retention import purge
from conftest import free_port, make_store, start_stack
from tools.stack import MODEL, Stack

DAY = 24 * 3600
NOW = datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)


def session_start(at: float) -> list:
    return [ActionExecuted("action_session_start", timestamp=at), SessionStarted(timestamp=at),
            ActionExecuted("action_listen", timestamp=at)]


def turn(text: str, at: float) -> list:
    return [UserUttered(text, intent={"name": "greet", "confidence": 1.0}, timestamp=at),
            BotUttered("Halo!", timestamp=at + 0.1), ActionExecuted("action_listen", timestamp=at + 0.2)]


def stored(backend, sender: str) -> list[dict]:
    rows = backend.db.run(lambda cur: (cur.execute(
        "SELECT type_name, timestamp, data FROM events WHERE sender_id = %s ORDER BY id", (sender,)), cur.fetchall())[1])
    return [{"type": r["type_name"], "timestamp": r["timestamp"], "data": json.loads(r["data"])} for r in rows]


@pytest.fixture
def store(database_url, monkeypatch):
    # Each read from the table, as a Rasa process that did not save the conversation last reads
    # it (a process keeps the tracker it saved last while no newer event is stored).
    monkeypatch.setenv("TRACKER_CACHE_SIZE", "0")
    store = make_store(database_url)
    yield store
    store.dispose()


def save(store, sender: str, *batches: list) -> None:
    """Each batch saved as Rasa saves a turn: the tracker read back, the new events appended."""
    for events in batches:
        tracker = asyncio.run(store.retrieve(sender)) or DialogueStateTracker.from_events(sender, [])
        for event in events:
            tracker.update(event)
        asyncio.run(store.save(tracker))


def test_old_events_go_even_when_the_citizen_wrote_today(backend, store):
    old, today = (NOW - timedelta(days=40)).timestamp(), NOW.timestamp() - 600
    sender = f"bytime-{uuid.uuid4().hex[:8]}"
    save(store, sender, session_start(old) + turn("nik saya 3174011501900001", old + 5),
         session_start(today) + turn("halo lagi", today + 5))
    before = stored(backend, sender)

    deleted = purge(backend.db, 30, now=NOW)

    left = stored(backend, sender)
    cutoff = (NOW - timedelta(days=30)).timestamp()
    assert deleted["events"] >= 6
    assert left == [e for e in before if e["timestamp"] >= cutoff] and len(left) == 6  # today's session, whole
    assert "3174011501900001" not in json.dumps(left)
    tracker = asyncio.run(store.retrieve_full_tracker(sender))
    assert [e.text for e in tracker.events if isinstance(e, UserUttered)] == ["halo lagi"]


def test_a_session_across_the_cutoff_keeps_its_start_and_still_loads(backend, store):
    old, today = (NOW - timedelta(days=40)).timestamp(), NOW.timestamp() - 600
    going_on, gone = f"bytime-{uuid.uuid4().hex[:8]}", f"bytime-{uuid.uuid4().hex[:8]}"
    # One session that began 40 days ago and goes on today (no new session start in between).
    save(store, going_on, session_start(old) + turn("halo dulu", old + 5), turn("halo sekarang", today))
    save(store, gone, session_start(old) + turn("halo dulu", old + 5))

    purge(backend.db, 30, now=NOW)

    left = stored(backend, going_on)
    assert [(e["type"], e["data"].get("name")) for e in left[:2]] == [("action", "action_session_start"),
                                                                      ("session_started", None)]
    assert all(e["timestamp"] >= today for e in left[2:]) and len(left) == 5
    assert stored(backend, gone) == []  # nothing newer: nothing at all is kept
    tracker = asyncio.run(store.retrieve(going_on))
    assert isinstance(tracker.events[1], SessionStarted)
    assert [e.text for e in tracker.events if isinstance(e, UserUttered)] == ["halo sekarang"]
    # Purged again the next night: the kept start stays while its session goes on.
    assert purge(backend.db, 30, now=NOW + timedelta(hours=1))["events"] == 0


# --- the job: what it deletes, in batches, and how it fails -----------------------------------


def test_purge_deletes_what_is_older_than_the_retention(backend, outbox, clock):
    backend.otp.request("old", "+6281234567002")
    backend.otp.verify("old", outbox.last_code("+6281234567002"))
    backend.repo.create_certificate_link("old", 1)
    clock.advance(31 * 24 * 3600)
    backend.otp.request("new", "+6281234567003")
    deleted = purge(backend.db, 30, now=clock())
    assert (deleted["otp_challenges"], deleted["auth_sessions"], deleted["certificate_links"]) == (1, 1, 1)
    rows = backend.db.run(lambda cur: (cur.execute("SELECT conversation_id FROM otp_challenges"), cur.fetchall())[1])
    assert [r["conversation_id"] for r in rows] == ["new"]
    kept = backend.db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM audit_log"), cur.fetchone())[1])
    assert kept["n"] == 1  # the audit log stays
    assert purge(backend.db, 30, now=clock() + timedelta(seconds=1))["otp_challenges"] == 0


def test_purge_goes_in_batches_and_keeps_what_a_returning_citizen_wrote(backend, database_url, clock, monkeypatch):
    from backend import retention

    monkeypatch.setattr(retention, "BATCH", 2)
    for n in range(5):
        backend.otp.request(f"old-{n}", f"+628123456700{n + 1}")
    store = make_store(database_url)
    old, new = clock().timestamp(), clock().timestamp() + 31 * 24 * 3600
    conversations = {f"retention-old-{n}": [old, old + 1] for n in range(5)}
    conversations["retention-returning"] = [old, new]  # wrote again after a month: the old event goes
    for sender, stamps in conversations.items():
        tracker = DialogueStateTracker.from_events(sender, [UserUttered("halo", timestamp=t) for t in stamps])
        asyncio.run(store.save(tracker))
    clock.advance(31 * 24 * 3600)

    find_open = retention._open_session_starts

    def citizen_writes_when_the_job_starts(db, epoch):
        found = find_open(db, epoch)
        tracker = asyncio.run(store.retrieve("retention-old-0"))
        tracker.update(UserUttered("saya kembali", timestamp=new))
        asyncio.run(store.save(tracker))
        return found

    monkeypatch.setattr(retention, "_open_session_starts", citizen_writes_when_the_job_starts)
    deleted = purge(backend.db, 30, now=clock())
    store.dispose()
    assert deleted["otp_challenges"] == 5  # three batches of at most 2
    assert deleted["events"] == 11  # every old event, in six batches of at most 2
    left = backend.db.run(lambda cur: (cur.execute(
        "SELECT sender_id, count(*) AS n FROM events WHERE sender_id LIKE 'retention-%%' GROUP BY sender_id"
        " ORDER BY sender_id"), cur.fetchall())[1])
    assert [(r["sender_id"], r["n"]) for r in left] == [("retention-old-0", 1), ("retention-returning", 1)]


def test_a_failing_rule_does_not_stop_the_others_and_fails_the_job(backend, database_url, clock, monkeypatch, caplog):
    from backend import retention

    backend.otp.request("old", "+6281234567002")
    clock.advance(31 * 24 * 3600)
    broken = [("tickets", "renamed_column < %(cutoff)s")]
    monkeypatch.setattr(retention, "RULES", broken + retention.RULES)
    with pytest.raises(retention.PurgeFailed) as failure:
        purge(backend.db, 30, now=clock())
    assert failure.value.failed == {"tickets": "UndefinedColumn"}
    assert failure.value.deleted["otp_challenges"] == 1  # purged all the same
    assert "retention: tickets not purged (UndefinedColumn)" in caplog.text

    # The job itself ends in failure, so that the CronJob shows it.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr("sys.argv", ["retention", "--days", "30"])
    with pytest.raises(SystemExit) as exit_status:
        retention.main()
    assert exit_status.value.code == 1


# --- the real Rasa ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory):
    if not MODEL.exists():
        pytest.skip("no trained model: run `make train`")
    tmp = tmp_path_factory.mktemp("stack")
    # No tracker kept in Rasa's memory: every turn reads the conversation back from the table.
    running = Stack(database_url, rasa_port=free_port(), action_port=free_port(), log_dir=tmp / "log",
                    extra_env={"VAR_DIR": str(tmp), "OTP_OUTBOX": str(tmp / "outbox.jsonl"),
                               "OTP_HASH_KEY": "retention-test-key", "TRACKER_CACHE_SIZE": "0"})
    start_stack(running, tmp / "log")
    yield running
    running.stop()


def say(stack, sender: str, text: str) -> str:
    reply = requests.post(f"http://127.0.0.1:{stack.rasa_port}/webhooks/rest/webhook",
                          json={"sender": sender, "message": text}, timeout=60)
    reply.raise_for_status()
    return "\n".join(m.get("text", "") for m in reply.json())


def age(backend, sender: str, days: int, up_to_id: int | None = None) -> int:
    """Moves a conversation's events (all, or up to an id) back in time, in the column and in the
    JSON Rasa reads; returns how many."""
    def fn(cur):
        cur.execute("UPDATE events SET timestamp = timestamp - %(s)s,"
                    " data = jsonb_set(data::jsonb, '{timestamp}', to_jsonb(timestamp - %(s)s))::text"
                    " WHERE sender_id = %(sender)s AND id <= %(up_to)s",
                    {"s": days * DAY, "sender": sender, "up_to": up_to_id or 2**62})
        return cur.rowcount

    return backend.db.run(fn)


def last_id(backend, sender: str) -> int:
    return backend.db.run(lambda cur: (cur.execute("SELECT max(id) AS i FROM events WHERE sender_id = %s",
                                                   (sender,)), cur.fetchone()["i"])[1])


def test_the_conversation_still_answers_after_its_old_events_go(stack, backend):
    # A citizen who wrote 40 days ago and writes again today, halfway through a form when the job runs.
    returning = f"bytime-{uuid.uuid4().hex[:8]}"
    assert say(stack, returning, "halo")
    aged = age(backend, returning, 40)
    assert "nomor HP" in say(stack, returning, "cek status vaksin")  # a new session, today
    # One session going on across the cutoff: its first turn 40 days old, its form asked today.
    across = f"bytime-{uuid.uuid4().hex[:8]}"
    assert say(stack, across, "halo")
    first_turn = last_id(backend, across)
    assert "nomor HP" in say(stack, across, "cek status vaksin")
    age(backend, across, 40, up_to_id=first_turn)

    deleted = purge(backend.db, 30)

    cutoff = time.time() - 30 * DAY
    assert deleted["events"] >= aged
    assert all(e["timestamp"] >= cutoff for e in stored(backend, returning))
    kept = stored(backend, across)
    assert [e["type"] for e in kept if e["timestamp"] < cutoff] == ["action", "session_started"]
    assert "halo" not in [e["data"].get("text") for e in kept]
    for sender, phone in ((returning, "7002"), (across, "7003")):  # both forms carry on where they were
        reply = say(stack, sender, f"0812 3456 {phone}")
        assert f"0812****{phone}" in reply and "kode OTP" in reply, reply
