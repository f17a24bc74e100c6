"""PostgreSQL statements that do not stop the event loop while the database answers.

Rasa handles every conversation of a process on one event loop, and the tracker store's two
statements per message (has anyone written since? then the new events) held that loop for
their whole round trip: at 16 users, 17% of the loop's time went to waiting on PostgreSQL,
which on a busy machine waits for a core of its own. psycopg2 has an asynchronous mode for this
(https://www.psycopg.org/docs/advanced.html#asynchronous-support): the statement is sent, and the
connection's socket is watched by the event loop until the answer is there, as aiopg does. This
module is that wait and a small pool of such connections; the SQL stays psycopg2's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import psycopg2
import psycopg2.extensions


async def wait(connection: Any) -> None:
    """Until the asynchronous connection is done with what it was doing (connecting, or a
    statement): its errors are raised here, as psycopg2 raises them."""
    loop = asyncio.get_running_loop()
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        future = loop.create_future()
        fd = connection.fileno()
        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, _ready, future)
            stop = loop.remove_reader
        elif state == psycopg2.extensions.POLL_WRITE:
            loop.add_writer(fd, _ready, future)
            stop = loop.remove_writer
        else:
            raise psycopg2.OperationalError(f"unexpected poll() state {state}")
        try:
            await future
        finally:
            stop(fd)


def _ready(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Pool:
    """At most `size` connections in use at once (others wait their turn), in autocommit mode
    (psycopg2's asynchronous connections always are). A connection whose statement failed or
    was cancelled is closed rather than used again."""

    def __init__(self, connect_kwargs: dict[str, Any], size: int = 10) -> None:
        self.connect_kwargs = connect_kwargs
        self.size = size
        self.idle: list[Any] = []
        self.in_use = 0
        self.waiting: deque[asyncio.Future] = deque()

    async def _acquire(self) -> Any:
        while self.in_use >= self.size:
            turn = asyncio.get_running_loop().create_future()
            self.waiting.append(turn)
            await turn
        self.in_use += 1
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        try:
            connection = psycopg2.connect(**self.connect_kwargs, async_=1)
            await wait(connection)
        except BaseException:
            self._release(None)
            raise
        return connection

    def _release(self, connection: Any) -> None:
        self.in_use -= 1
        if connection is not None and not connection.closed:
            self.idle.append(connection)
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                break

    async def rows(self, sql: str, parameters: Any, on_error=None) -> list[tuple]:
        """The statement's rows (none for a statement that returns none). on_error(exc,
        connection) is called with a psycopg2 error before it is raised."""
        connection = await self._acquire()
        try:
            cursor = connection.cursor()
            cursor.execute(sql, parameters)
            await wait(connection)
            rows = cursor.fetchall() if cursor.description is not None else []
            cursor.close()
        except BaseException as exc:
            if isinstance(exc, psycopg2.Error) and on_error is not None:
                on_error(exc, connection)
            connection.close()  # a failed or cancelled statement: its state is unknown
            self._release(connection)
            raise
        self._release(connection)
        return rows

    def close(self) -> None:
        """Close the idle connections (those in use are closed when handed back)."""
        while self.idle:
            self.idle.pop().close()
