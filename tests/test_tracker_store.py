"""The tracker store's speed-ups (rasa_server/tracker_store.py) behave as what they replace: every
event stored once and in order, new conversations never counted, connections broken by a restart
survived, commits without waiting for the disk, recent trackers reused only while nobody wrote.
(The patches of Rasa itself are tested in tests/test_patches*.py.)"""

from __future__ import annotations

import asyncio
import time

import psycopg
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
    through on fresh connections, without an apology to the citizen. In one event loop, as in
    Rasa: the statements' pool belongs to the loop it works in."""
    sender = "speedups-restart"

    async def scenario():
        tracker = DialogueStateTracker(sender, store.domain.slots)
        tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
        await store.save(tracker)
        [(statements_pid,)] = await store._rows("SELECT pg_backend_pid()", ())  # the pool's one connection
        with store.engine.connect() as connection:  # the one connection the ORM's pool holds
            orm_pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(database_url, autocommit=True) as admin:
            for pid in (statements_pid, orm_pid):
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        tracker = await store.retrieve(sender)  # plain SQL: its pool's connection was killed
        tracker.update(ActionExecuted("utter_greet"))
        await store.save(tracker)
        newcomer = DialogueStateTracker(sender + "-2", store.domain.slots)
        newcomer.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
        await store.save(newcomer)  # counted through the ORM: that pool's connection was killed too
        [(now_pid,)] = await store._rows("SELECT pg_backend_pid()", ())
        return statements_pid, now_pid

    killed, now = asyncio.run(scenario())
    assert now != killed
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


# --- the statements' connections (psycopg_pool's AsyncConnectionPool) ----------------------------


def alive(database_url: str, pids) -> set[int]:
    with psycopg.connect(database_url) as admin:
        return {pid for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),))}


def test_statements_overlap_and_the_loop_goes_on(store):
    async def scenario():
        await store._rows("SELECT 1", ())
        ticks = 0

        async def ticking():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(ticking())
        started = time.monotonic()
        results = await asyncio.gather(*(store._rows("SELECT %s::int FROM pg_sleep(0.5)", (i,)) for i in range(3)))
        elapsed = time.monotonic() - started
        ticker.cancel()
        return results, elapsed, ticks

    results, elapsed, ticks = asyncio.run(scenario())
    assert results == [[(i,)] for i in range(3)]
    assert elapsed < 1.0  # three statements of 0.5 s at once, not one after the other (1.5 s)
    assert ticks >= 10  # the loop ran other work while they ran


def test_at_most_pool_size_statements_at_once(database_url, monkeypatch):
    import rasa_server.tracker_store

    monkeypatch.setattr(rasa_server.tracker_store, "POOL_SIZE", 3)
    store = make_store(database_url)

    async def scenario():
        await store._rows("SELECT 1", ())
        started = time.monotonic()
        await asyncio.gather(*(store._rows("SELECT pg_sleep(0.4)", ()) for _ in range(6)))
        return time.monotonic() - started

    try:
        elapsed = asyncio.run(scenario())
    finally:
        store.dispose()
    assert 0.8 <= elapsed < 1.2  # two rounds of three: not one round (0.4 s), not three (1.2 s)


def test_a_failed_or_cancelled_statement_closes_its_connection_only(store, database_url):
    async def scenario():
        await store._rows("SELECT 1", ())
        pids = {pid for [(pid,)] in await asyncio.gather(
            *(store._rows("SELECT pg_backend_pid() FROM pg_sleep(0.2)", ()) for _ in range(2)))}
        assert len(pids) == 2  # two idle connections in the pool
        with pytest.raises(sa.exc.ProgrammingError) as failed:
            await store._rows("SELEC nonsense", ())
        assert not failed.value.connection_invalidated  # a statement's error, not a lost connection
        deadline = time.monotonic() + 5
        while len(alive(database_url, pids)) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(alive(database_url, pids)) == 1  # its connection closed, the other kept

        slow_sql = "SELECT pg_sleep(5) AS cancelled_probe"
        slow = asyncio.create_task(store._rows(slow_sql, ()))
        await asyncio.sleep(0.2)
        with psycopg.connect(database_url) as admin:
            busy = {pid for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE query = %s AND state = 'active'", (slow_sql,))}
        assert len(busy) == 1
        started = time.monotonic()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert time.monotonic() - started < 2  # the server cancelled it: no 5 s wait
        while alive(database_url, busy) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.05)
        assert not alive(database_url, busy)  # the cancelled statement's connection closed
        return await store._rows("SELECT %s::text", ("masih jalan",))

    assert asyncio.run(scenario()) == [("masih jalan",)]


def test_statements_without_rows_and_parameters_are_escaped(store, database_url):
    async def scenario():
        assert await store._rows("CREATE TABLE IF NOT EXISTS statements_probe (v text)", ()) == []
        await store._rows("INSERT INTO statements_probe VALUES (%(v)s)", {"v": "'); DROP TABLE statements_probe; --"})
        return await store._rows("SELECT v FROM statements_probe", ())

    try:
        assert asyncio.run(scenario()) == [("'); DROP TABLE statements_probe; --",)]
    finally:
        with psycopg.connect(database_url) as connection:
            connection.execute("DROP TABLE statements_probe")  # still there to drop
