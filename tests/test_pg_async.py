"""rasa_server/pg_async.py on the real PostgreSQL: statements run while the event loop goes on."""

from __future__ import annotations

import asyncio
import time

import psycopg2
import pytest

from rasa_server import pg_async


@pytest.fixture
def pool(database_url):
    pool = pg_async.Pool({"dsn": database_url}, size=3)
    yield pool
    pool.close()


def test_statements_overlap_and_the_loop_goes_on(pool):
    async def scenario():
        ticks = 0

        async def ticking():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(ticking())
        started = time.monotonic()
        results = await asyncio.gather(*(pool.rows("SELECT pg_sleep(0.5), %s", (i,)) for i in range(3)))
        elapsed = time.monotonic() - started
        ticker.cancel()
        return results, elapsed, ticks

    results, elapsed, ticks = asyncio.run(scenario())
    assert results == [[("", i)] for i in range(3)]
    assert elapsed < 1.0  # three statements of 0.5 s at once, not one after the other (1.5 s)
    assert ticks >= 10  # the loop ran other work while they ran
    assert len(pool.idle) == 3 and pool.in_use == 0


def test_at_most_size_statements_at_once(pool):
    async def scenario():
        started = time.monotonic()
        await asyncio.gather(*(pool.rows("SELECT pg_sleep(0.4)", ()) for _ in range(6)))
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert 0.8 <= elapsed < 1.2  # two rounds of three: not one round (0.4 s), not three (1.2 s)
    assert len(pool.idle) == 3 and pool.in_use == 0


def test_a_failed_or_cancelled_statement_closes_its_connection_only(pool):
    seen = []

    async def scenario():
        await pool.rows("SELECT 1", ())
        kept = pool.idle[0]
        with pytest.raises(psycopg2.errors.SyntaxError):
            await pool.rows("SELEC nonsense", (), on_error=lambda exc, connection: seen.append(type(exc)))
        assert kept.closed and pool.in_use == 0
        slow = asyncio.create_task(pool.rows("SELECT pg_sleep(5)", ()))
        await asyncio.sleep(0.2)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert pool.in_use == 0 and all(not c.closed for c in pool.idle)
        return await pool.rows("SELECT %s::text", ("masih jalan",))

    assert asyncio.run(scenario()) == [("masih jalan",)]
    assert seen == [psycopg2.errors.SyntaxError]


def test_statements_without_rows_and_parameters_are_escaped(pool, database_url):
    async def scenario():
        assert await pool.rows("CREATE TABLE IF NOT EXISTS pg_async_probe (v text)", ()) == []
        await pool.rows("INSERT INTO pg_async_probe VALUES (%(v)s)", {"v": "'); DROP TABLE pg_async_probe; --"})
        return await pool.rows("SELECT v FROM pg_async_probe", ())

    try:
        assert asyncio.run(scenario()) == [("'); DROP TABLE pg_async_probe; --",)]
    finally:
        with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
            cursor.execute("DROP TABLE pg_async_probe")  # still there to drop
