"""The tracker store's speed-ups (rasa_server/tracker_store.py) behave as what they replace: every
event stored once and in order, new conversations never counted, connections broken by a restart
survived, commits without waiting for the disk, recent trackers reused only while nobody wrote.
(The patches of Rasa itself are tested in tests/test_patches*.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from conftest import make_store


# --- the tracker store ---------------------------------------------------------------------------


@pytest.fixture
def store(database_url):
    store = make_store(database_url)
    yield store
    store.dispose()


def stored(store, sender):
    with store.session_scope() as session:
        return [(row.type_name, row.intent_name, row.action_name)
                for row in session.query(store.SQLEvent).filter_by(sender_id=sender).order_by(store.SQLEvent.id)]


def test_tracker_store_keeps_every_event_once_in_order(store):
    sender = "speedups-order"
    run = asyncio.run
    t = time.time()  # a session's first two events share its start time, as when Rasa writes them
    tracker = DialogueStateTracker(sender, store.domain.slots)
    tracker.update(ActionExecuted("action_session_start", timestamp=t))
    tracker.update(SessionStarted(timestamp=t))
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 1))
    run(store.save(tracker))  # a new tracker: counted the usual way
    tracker = run(store.retrieve(sender))
    assert len(tracker.events) == 3
    tracker.update(BotUttered("Halo!", timestamp=t + 2))
    tracker.update(ActionExecuted("utter_greet", timestamp=t + 3))
    run(store.save(tracker))  # the count comes from retrieve()
    tracker.update(ActionExecuted("action_listen", timestamp=t + 4))
    run(store.save(tracker))  # saved twice: counted again, nothing doubled
    # A new session inside a turn: the old session's events are not written again.
    tracker = run(store.retrieve(sender))
    tracker.update(ActionExecuted("action_session_start", timestamp=t + 5))
    tracker.update(SessionStarted(timestamp=t + 5))
    tracker.update(UserUttered("menu", {"name": "show_menu", "confidence": 1.0}, timestamp=t + 6))
    run(store.save(tracker))
    assert stored(store, sender) == [
        ("action", None, "action_session_start"), ("session_started", None, None),
        ("user", "greet", None), ("bot", None, None), ("action", None, "utter_greet"),
        ("action", None, "action_listen"), ("action", None, "action_session_start"),
        ("session_started", None, None), ("user", "show_menu", None)]
    again = run(store.retrieve(sender))
    assert [e.type_name for e in again.events] == ["action", "session_started", "user"]
    assert [e.type_name for e in run(store.retrieve_full_tracker(sender)).events][:3] == [
        "action", "session_started", "user"]
    assert len(run(store.retrieve_full_tracker(sender)).events) == 9
    assert run(store.retrieve("speedups-nobody")) is None


def test_a_new_conversation_is_never_counted_and_stored_once(store, monkeypatch):
    """Rasa saves a new conversation's tracker three times in its first turn: empty, after the
    session start, at the end, through its wrappers of the store as in production. None of them
    counts the stored events in the database: Rasa created the tracker because none was stored."""
    from rasa.core.tracker_store import AwaitableTrackerStore, FailSafeTrackerStore, SQLTrackerStore

    counted = []
    rasa_count = SQLTrackerStore._additional_events
    monkeypatch.setattr(SQLTrackerStore, "_additional_events",
                        lambda self, session, tracker: counted.append(1) or rasa_count(self, session, tracker))
    run = asyncio.run
    wrapped = AwaitableTrackerStore(FailSafeTrackerStore(store))
    sender, t = "speedups-new", time.time()
    tracker = run(wrapped.get_or_create_tracker(sender, append_action_listen=False))
    tracker.update(ActionExecuted("action_session_start", timestamp=t))
    tracker.update(SessionStarted(timestamp=t))
    tracker.update(ActionExecuted("action_listen", timestamp=t + 1))
    run(wrapped.save(tracker))
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 2))
    tracker.update(BotUttered("Halo!", timestamp=t + 3))
    tracker.update(ActionExecuted("action_listen", timestamp=t + 4))
    run(wrapped.save(tracker))
    run(wrapped.save(tracker))  # nothing new: nothing written
    assert counted == []
    assert [row[0] for row in stored(store, sender)] == [
        "action", "session_started", "action", "user", "bot", "action"]
    assert [e.type_name for e in run(store.retrieve(sender)).events] == [
        "action", "session_started", "action", "user", "bot", "action"]
    # A tracker the store knows nothing of is counted: retrieve() found nothing of this one, but
    # its one save took that knowledge; the second tracker is new to the store.
    other = "speedups-new-2"
    assert run(wrapped.retrieve(other)) is None
    first = DialogueStateTracker(other, store.domain.slots)
    first.update(ActionExecuted("action_listen", timestamp=t))
    run(store.save(first))
    second = DialogueStateTracker(other, store.domain.slots)
    second.update(ActionExecuted("action_listen", timestamp=t))
    second.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 1))
    run(store.save(second))
    assert counted == [1]
    assert [row[0] for row in stored(store, other)] == ["action", "user"]


def test_tracker_store_survives_connections_broken_by_a_restart(store, database_url):
    """Pooled connections killed (as a database restart does): the next read and save go
    through on fresh connections, without an apology to the citizen."""
    import psycopg2

    run = asyncio.run
    sender = "speedups-restart"
    tracker = DialogueStateTracker(sender, store.domain.slots)
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
    run(store.save(tracker))
    with store.engine.connect() as connection:  # the one connection the ORM's pool holds
        pids = [connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()]
    pids += [connection.get_backend_pid() for connection in store._pool.idle]  # the statements' one
    assert len(pids) == 2
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        for pid in pids:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()

    tracker = run(store.retrieve(sender))  # plain SQL: its pool's connection was killed
    tracker.update(ActionExecuted("utter_greet"))
    run(store.save(tracker))
    newcomer = DialogueStateTracker(sender + "-2", store.domain.slots)
    newcomer.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
    run(store.save(newcomer))  # counted through the ORM: that pool's connection was killed too
    assert [row[0] for row in stored(store, sender)] == ["user", "action"]
    assert [row[0] for row in stored(store, sender + "-2")] == ["user"]


def test_tracker_store_commits_without_waiting_for_the_disk_unless_told(store, database_url, monkeypatch):
    def setting(engine):  # the value, and where it came from ("client": the connection's options)
        with engine.connect() as connection:
            return tuple(connection.execute(sa.text(
                "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")).one())

    assert setting(store.engine) == ("off", "client")
    assert asyncio.run(store._rows("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'",
                                   {})) == [("off", "client")]
    monkeypatch.setenv("TRACKER_SYNCHRONOUS_COMMIT", "on")
    durable = make_store(database_url)
    assert setting(durable.engine)[1] != "client"  # the server's setting (tests: the database's)
    durable.dispose()


def test_recent_tracker_is_reused_only_while_nobody_wrote_since(store, database_url):
    run = asyncio.run
    sender = "speedups-recent"
    t = time.time()
    tracker = DialogueStateTracker(sender, store.domain.slots)
    tracker.update(ActionExecuted("action_session_start", timestamp=t))
    tracker.update(SessionStarted(timestamp=t))
    run(store.save(tracker))  # a session began in this turn: not kept
    assert run(store.retrieve(sender)) is not tracker

    tracker = run(store.retrieve(sender))
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 1))
    tracker.update(SlotSet("phone_number", "+6281234567001", timestamp=t + 2))
    run(store.save(tracker))
    again = run(store.retrieve(sender))
    assert again is tracker  # no read of the events
    assert run(store.retrieve(sender)) is not tracker  # taken: a second caller reads the database
    fresh = make_store(database_url)
    assert list(run(fresh.retrieve(sender)).events) == list(again.events)
    assert again.get_slot("phone_number") == "+6281234567001"

    # Saved again by this process, then another process (another Rasa worker) writes.
    again.update(ActionExecuted("action_listen", timestamp=t + 3))
    run(store.save(again))
    other = run(fresh.retrieve(sender))
    other.update(SlotSet("phone_number", "+6281234567002", timestamp=t + 4))
    run(fresh.save(other))
    latest = run(store.retrieve(sender))
    assert latest is not again and latest.get_slot("phone_number") == "+6281234567002"
    assert [row[0] for row in stored(store, sender)] == [
        "action", "session_started", "user", "slot", "action", "slot"]
    fresh.dispose()


def test_recent_trackers_can_be_turned_off(database_url, monkeypatch):
    monkeypatch.setenv("TRACKER_CACHE_SIZE", "0")
    store = make_store(database_url)
    run = asyncio.run
    tracker = DialogueStateTracker("speedups-nocache", store.domain.slots)
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
    run(store.save(tracker))
    assert run(store.retrieve("speedups-nocache")) is not tracker
    store.dispose()
