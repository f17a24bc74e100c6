"""Rasa's SQL tracker store, made to fail loudly when PostgreSQL is unreachable.

Rasa wraps every tracker store in a FailSafeTrackerStore that, on any Exception, carries on
with an empty in-memory conversation: with the database down, a citizen halfway through a
verification would silently be treated as new, and their turns kept in one process's memory.
This store raises TrackerStoreUnavailable instead, deliberately not an Exception so that the
wrapper lets it through; the channels answer "layanan sedang gangguan" and the conversation
continues where it was once the database is back. The first turn after a database restart does
not fail on a pooled connection the restart broke: it is tried once more on a fresh one.

Lighter per message than Rasa's own, same rows and same order (profiled in docs/performance.md):
- reading fetches only the events' JSON, not whole ORM objects;
- on PostgreSQL each read and each save is one statement on a connection in autocommit mode,
  sent as plain SQL: one round trip, where the ORM session's BEGIN, statement and COMMIT or
  ROLLBACK took three, with the event loop waiting on each. A save is one multi-row INSERT,
  atomic on its own. The event loop does not wait for the answer: it goes on with other
  conversations meanwhile (psycopg's asynchronous connections, in psycopg_pool's pool);
- commits of conversation events do not wait for the disk (synchronous_commit off for this
  store's connections only, or for its INSERTs with DB_SESSION_SETTINGS=role;
  TRACKER_SYNCHRONOUS_COMMIT=on restores it): a crash of PostgreSQL
  itself may lose the last fraction of a second of conversation, never corrupt it, and the
  records that matter (codes, changes of data, audit, tickets) are written by the backend with
  full durability;
- events are written as JSON by orjson (rasa_server/jsonio.py), and each event keeps the JSON
  it was stored (or read) as, which the calls to the action server send as it is;
- saving inserts the new events in one statement, not one INSERT ... RETURNING per event
  through the ORM's unit of work;
- to find which events are new, Rasa's save() counts the stored events of the session again. A
  tracker read or saved by this store knows how many of its events are stored (those it was
  built from, or all it held when saved), and a conversation Rasa starts after retrieve() found
  none of its events has none stored, so save() takes the events after those; a tracker this
  store knows nothing of is counted the usual way, and so is one whose save failed;
- the tracker saved last for a conversation stays in memory (TRACKER_CACHE_SIZE conversations,
  512 by default, 0 for none): the next message of that conversation reuses it when no event
  was stored since, by this process or another, which one indexed query tells.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import psycopg
import sqlalchemy as sa
import sqlalchemy.exc
import sqlalchemy.orm
from psycopg_pool import AsyncConnectionPool
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs
from rasa.shared.core.events import BotUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

from backend import secret_rules
from backend.db import CONNECT_TIMEOUT_S, KEEP_IDLE_S, RECONNECT_S, WAIT_S, prepare_threshold, session_options
from rasa_server.jsonio import dumps, keep_last, remember_json


NOTHING_STORED_SIZE = 1024
# Statements of one process at once: SQL_POOL_SIZE + SQL_MAX_OVERFLOW (Rasa's pool settings;
# SQLAlchemy's defaults 5 + 10 when unset), what tests/deploy_support.py counts per Rasa worker.
POOL_SIZE = int(os.environ.get("SQL_POOL_SIZE", "5")) + int(os.environ.get("SQL_MAX_OVERFLOW", "10"))


class TrackerStoreUnavailable(BaseException):
    """The conversation could not be read or saved; nothing of this turn was processed or kept."""


class Statements:
    """The store's connections for one event loop, in autocommit mode: psycopg_pool's
    AsyncConnectionPool (its workers are tasks of that loop), at most `size` in use at once.
    As backend/db.py's Database, and for the same reason (a turn on a database that is down
    fails at once, not after WAIT_S): until a connection has succeeded, at first and again
    after one was lost or the pool gave up reconnecting, each statement connects on its own,
    one at a time, and uses that connection once."""

    def __init__(self, connect_kwargs: dict[str, Any], size: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_kwargs = connect_kwargs
        self.pool = AsyncConnectionPool(
            kwargs=connect_kwargs, min_size=0, max_size=size, open=False, name="tracker_store",
            timeout=WAIT_S, max_idle=KEEP_IDLE_S, reconnect_timeout=RECONNECT_S,
            reconnect_failed=self.unreachable)
        self.opened = False
        self.reachable = False
        self.alone = asyncio.Lock()
        self.failed: tuple[float, BaseException | None] = (float("-inf"), None)

    def unreachable(self, pool: AsyncConnectionPool | None = None) -> None:
        self.reachable = False

    async def _connect_alone(self, asked: float) -> psycopg.AsyncConnection | None:
        async with self.alone:
            if self.reachable:
                return None
            failed_at, error = self.failed
            if failed_at >= asked and error is not None:
                raise error  # the attempt this statement waited for
            try:
                connection = await psycopg.AsyncConnection.connect(**self.connect_kwargs)
            except psycopg.Error as exc:
                self.failed = (time.monotonic(), exc)
                raise
            self.reachable = True
            return connection

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if not self.reachable:
            connection = await self._connect_alone(time.monotonic())
            if connection is not None:
                try:
                    yield connection
                finally:
                    await connection.close()
                return
        if not self.opened:
            await self.pool.open()
            self.opened = True
        connection = await self.pool.getconn()
        try:
            yield connection
        finally:
            await self.pool.putconn(connection)  # a closed one is replaced by the pool

    async def lost(self) -> None:
        """A connection broke: the idle ones most likely too (a restart)."""
        self.unreachable()
        if self.opened:
            await self.pool.drain()


# What a stored bot message shows in place of a certificate's download token.
REDACTED = "***"


def _without(value: Any, secret: str) -> Any:
    """`value` with every occurrence of `secret` in its strings replaced; new containers, so
    that the copies the channels hold of this turn's messages keep the working link."""
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, dict):
        return {k: _without(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, secret) for v in value]
    return value


def redact_certificate(event: Any) -> None:
    """A bot message that carries a certificate (utter_certificate_ready's `custom.certificate`,
    as data) is kept without its download token: the link was shown to the citizen in this
    turn, and conversations are stored for RETENTION_DAYS. The token is known from the data,
    and replaced wherever it appears (text, data, the response's variables in metadata); the
    event itself is changed, so the JSON that goes on to the action server is the redacted one."""
    if not isinstance(event, BotUttered) or not isinstance(event.data, dict):
        return
    custom = event.data.get("custom")
    part = custom.get("certificate") if isinstance(custom, dict) else None
    token = part.get("token") if isinstance(part, dict) else None
    if not isinstance(token, str) or not token or token == REDACTED:
        return
    event.text = _without(event.text, token)
    event.data = _without(event.data, token)
    event.metadata = _without(event.metadata, token)


class StrictSQLTrackerStore(SQLTrackerStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Rasa loads this store first of ours: its process refuses placeholder or short secrets
        # here, before connecting (REQUIRE_SECRETS=1, backend/secret_rules.py).
        secret_rules.check(os.environ, secret_rules.RASA)
        super().__init__(*args, **kwargs)
        url = self.engine.url
        self.engine.dispose()
        if url.get_backend_name() != "postgresql":
            # Reads and saves below are PostgreSQL's SQL (endpoints.yml: dialect postgresql).
            raise ValueError(f"StrictSQLTrackerStore needs PostgreSQL, not {url.get_backend_name()}")
        kwargs = create_engine_kwargs(url)
        # The ORM engine runs only Rasa's own count, synchronously (one at a time per process).
        kwargs.update(pool_size=1, max_overflow=0)
        connect_args = kwargs.setdefault("connect_args", {})
        commit_off = os.environ.get("TRACKER_SYNCHRONOUS_COMMIT", "off") == "off"
        options = session_options(synchronous_commit="off" if commit_off else None,
                                  base=connect_args.get("options", ""))
        if options:
            connect_args["options"] = options
        # DB_SESSION_SETTINGS=role (PgBouncer) sends no options: synchronous_commit off is then
        # not a default of the Rasa role, whose channel writes stay durable, but SET LOCAL in
        # each INSERT's own transaction (one round trip, bound client-side: see _rows).
        self._insert_prefix = "SET LOCAL synchronous_commit TO off; " if commit_off and "synchronous_commit" not in options else ""
        self.engine = sa.create_engine(url, **kwargs)
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)
        # The statements of each message, on connections (in autocommit mode) that the event loop
        # waits on without stopping; the ORM's engine above only for Rasa's own count.
        connect_kwargs = url.translate_connect_args(username="user", database="dbname")
        connect_kwargs.update(url.query, **connect_args, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                              prepare_threshold=prepare_threshold())
        self._connect_kwargs = connect_kwargs
        self._statements: Statements | None = None
        table = self.SQLEvent.__table__.name
        self._sql_last_id = f"SELECT max(id) FROM {table} WHERE sender_id = %(sender_id)s"
        self._sql_all_sessions = f"SELECT data FROM {table} WHERE sender_id = %(sender_id)s ORDER BY id"
        # Rasa's _event_query: the events from the latest session start on, or all of them when
        # the conversation has none.
        self._sql_latest_session = (
            f"SELECT e.data FROM {table} e, (SELECT max(timestamp) AS session_start FROM {table}"
            f" WHERE sender_id = %(sender_id)s AND type_name = 'session_started') s"
            f" WHERE e.sender_id = %(sender_id)s"
            f" AND (e.timestamp >= s.session_start OR s.session_start IS NULL) ORDER BY e.id")
        self._recent: OrderedDict[str, tuple[DialogueStateTracker, int]] = OrderedDict()
        self._recent_size = int(os.environ.get("TRACKER_CACHE_SIZE", "512"))
        # Conversations retrieve() found no event of, until their first save.
        self._nothing_stored: OrderedDict[str, None] = OrderedDict()

    def dispose(self) -> None:
        """Close every pooled connection: the ORM engine's, and the statements' when their event
        loop is not running (after asyncio.run() it is closed, and they close with the pool when
        it is collected)."""
        self.engine.dispose()
        statements, self._statements = self._statements, None
        if statements is not None and not statements.loop.is_closed() and not statements.loop.is_running():
            statements.loop.run_until_complete(statements.pool.close())

    def _current_statements(self) -> Statements:
        """Rasa serves from one event loop; tools and tests may call from one loop after another
        (asyncio.run), and a pool works in the loop it was opened in."""
        statements = self._statements
        if statements is None or statements.loop is not asyncio.get_running_loop():
            statements = self._statements = Statements(self._connect_kwargs, POOL_SIZE)
        return statements

    async def _rows(self, sql: str, parameters, *, two_statements: bool = False) -> list[tuple]:
        """One statement in autocommit mode: one round trip, during which the event loop goes on
        with other conversations. Through psycopg's cursor directly: SQLAlchemy's statement and
        result objects around it cost more CPU than the statement. A connection whose statement
        failed or was cancelled is closed, not used again; one the database closed is thrown
        away with every idle one of the pool, as SQLAlchemy does, and the error says so
        (DBAPIError.connection_invalidated)."""
        statements = self._current_statements()
        gone = False
        try:
            async with statements.connection() as connection:
                try:
                    if two_statements:
                        # Two statements in one (_insert_prefix): only client-side binding (the
                        # simple query protocol) allows it; the rows are the second result.
                        cursor = psycopg.AsyncClientCursor(connection)
                        await cursor.execute(sql, parameters)
                        cursor.nextset()
                    else:
                        cursor = await connection.execute(sql, parameters)
                    return await cursor.fetchall() if cursor.description is not None else []
                except BaseException:
                    gone = connection.broken
                    await connection.close()  # its state is unknown
                    if gone:
                        await statements.lost()
                    raise
        except psycopg.Error as exc:
            raise sqlalchemy.exc.DBAPIError.instance(sql, parameters, exc, psycopg.Error,
                                                     connection_invalidated=gone) from exc

    async def _take_recent(self, sender_id: str) -> DialogueStateTracker | None:
        """The tracker this process saved last for that conversation, if no event was stored
        since (by any process): checked with one indexed query instead of reading and replaying
        every event. Taken out of the cache, so only one caller ever holds it; it comes back
        only with the next save()."""
        entry = self._recent.pop(sender_id, None)
        if entry is None:
            return None
        tracker, last_id = entry
        [(current,)] = await self._rows(self._sql_last_id, {"sender_id": sender_id})
        if current != last_id:
            return None
        tracker._events_in_store = len(tracker.events)
        return tracker

    def _keep_recent(self, tracker: DialogueStateTracker, last_id: int) -> None:
        keep_last(self._recent, tracker.sender_id, (tracker, last_id), self._recent_size)

    async def _retrieve(self, sender_id, fetch_events_from_all_sessions):
        if not fetch_events_from_all_sessions:
            recent = await self._take_recent(sender_id)
            if recent is not None:
                return recent
        sql = self._sql_all_sessions if fetch_events_from_all_sessions else self._sql_latest_session
        texts = [data for (data,) in await self._rows(sql, {"sender_id": sender_id})]
        events = [json.loads(data) for data in texts]
        if not events:
            self._note_nothing_stored(sender_id)
            return None
        self._nothing_stored.pop(sender_id, None)
        if not self.domain:
            return None
        tracker = DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)
        if len(tracker.events) == len(texts):  # none left out as unreadable: each has its JSON
            for event, text in zip(tracker.events, texts):
                remember_json(event, text)
        if not fetch_events_from_all_sessions and tracker.events.maxlen is None:
            tracker._events_in_store = len(events)
        return tracker

    def _known_stored(self, tracker: DialogueStateTracker) -> int | None:
        """How many of the tracker's events are stored, when this store knows without counting:
        the tracker was read or saved by it, or it is a conversation Rasa started (through its
        wrappers of this store) after retrieve() found none of its events. Known once: a save
        that fails and is tried again counts."""
        stored = tracker.__dict__.pop("_events_in_store", None)
        if stored is None and tracker.sender_id in self._nothing_stored:
            del self._nothing_stored[tracker.sender_id]
            if tracker.events.maxlen is None:
                stored = 0
        return stored

    def _note_nothing_stored(self, sender_id: str) -> None:
        self._nothing_stored[sender_id] = None
        while len(self._nothing_stored) > NOTHING_STORED_SIZE:  # a retrieve() no save followed
            self._nothing_stored.popitem(last=False)

    async def _save(self, tracker) -> None:
        """Rasa's SQLTrackerStore.save with one multi-row INSERT instead of ORM objects."""
        await self.stream_events(tracker)
        stored = self._known_stored(tracker)
        if stored is None:
            with self.session_scope() as session:  # Rasa's count of the session's stored events
                new = list(self._additional_events(session, tracker))
        else:
            new = list(itertools.islice(tracker.events, stored, len(tracker.events)))
        rows = []
        for event in new:
            redact_certificate(event)
            data = event.as_dict()
            text = dumps(data)
            remember_json(event, text)  # sent as it is in calls to the action server
            rows.append({
                "sender_id": tracker.sender_id,
                "type_name": event.type_name,
                "timestamp": data.get("timestamp"),
                "intent_name": data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                "action_name": data.get("name"),
                "data": text,
            })
        if not rows:
            self._stored(tracker)
            return
        ids = await self._insert(rows)
        self._stored(tracker)
        # Kept for the next message unless a new session began in this turn (a tracker read back
        # would then hold only the new session's events).
        if (self._recent_size > 0 and tracker.events.maxlen is None
                and not any(row["type_name"] == "session_started" for row in rows)):
            self._keep_recent(tracker, max(ids))

    @staticmethod
    def _stored(tracker: DialogueStateTracker) -> None:
        """Every event of this tracker is in the database: the next save() takes those after."""
        if tracker.events.maxlen is None:
            tracker._events_in_store = len(tracker.events)

    async def _once_more_after_disconnect(self, operation, *args):
        """A connection broken by a database restart fails its first statement: SQLAlchemy then
        drops every pooled connection, and the operation runs once more on a fresh one. (Cheaper
        than pool_pre_ping, which pays a round trip on every checkout.) Nothing was written by
        the failed try; a save retried counts the stored events again, so nothing is doubled."""
        try:
            return await operation(*args)
        except sqlalchemy.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise TrackerStoreUnavailable(type(exc).__name__) from exc
        try:
            return await operation(*args)
        except sqlalchemy.exc.DBAPIError as exc:
            raise TrackerStoreUnavailable(type(exc).__name__) from exc

    async def _insert(self, rows: list[dict]) -> list[int]:
        """The rows in one INSERT, committed; their ids. Plain SQL: SQLAlchemy compiles a multi-row
        INSERT anew for every number of rows, which cost more than the insert itself."""
        columns = list(rows[0])
        one_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        sql = (f"{self._insert_prefix}INSERT INTO {self.SQLEvent.__table__.name} ({', '.join(columns)}) VALUES "
               + ", ".join([one_row] * len(rows)) + " RETURNING id")
        values = tuple(row[c] for row in rows for c in columns)
        return [row_id for (row_id,) in await self._rows(sql, values, two_statements=bool(self._insert_prefix))]

    async def retrieve(self, sender_id):
        return await self._once_more_after_disconnect(super().retrieve, sender_id)

    async def retrieve_full_tracker(self, sender_id):
        return await self._once_more_after_disconnect(super().retrieve_full_tracker, sender_id)

    async def save(self, tracker) -> None:
        await self._once_more_after_disconnect(self._save, tracker)
