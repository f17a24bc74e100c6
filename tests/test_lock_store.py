"""The conversation lock store (rasa_server/lock_store.py) on a real Redis and in memory.

Two processes, each with its own Redis connections, take one conversation's lock many times at
once: never two turns at a time, nothing left locked. Turns go in arrival order, the next one
starting as soon as the one before ends; a ticket left by a dead process expires, after a lease
(which a living turn renews up to Rasa's lifetime) rather than the whole lifetime; a turn
cancelled while waiting (the channel's timeout) leaves nothing behind; Redis down fails the turn
at once; a Redis with a password or with TLS is reached only with the right password, a trusted
certificate and the right name.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
from typing import Iterator

import pytest
from rasa.core.lock_store import LockError, LockStore
from rasa.utils.endpoints import EndpointConfig

from rasa_server import lock_store
from rasa_server.lock_store import ISSUE, ConversationLockStore
from conftest import ROOT, free_port
from tools.stack import Stack

CONVERSATION = "6281234567002"  # a WhatsApp conversation id is a phone number


@contextlib.contextmanager
def a_redis(folder) -> Iterator[Stack]:
    """A redis-server of its own (tools/stack.py starts it; REDIS_PASSWORD set: it requires it)."""
    server = Stack("", redis_port=free_port(), log_dir=folder / "log")
    server.start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    with a_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.redis_port


def redis_store(port: int) -> ConversationLockStore:
    return ConversationLockStore(EndpointConfig(url="127.0.0.1", port=port, db=0, store="redis"))


async def lock_keys(store: ConversationLockStore) -> list[str]:
    return sorted(k.decode() for k in await store._queues.redis.keys("lock:*"))


async def serve_in_order(stores: list[ConversationLockStore], waiters: int, look_again: float) -> tuple[list, float]:
    """A turn holds the lock while `waiters` more queue up (alternating stores); returns the order
    they entered in and how long the first of them took to start after the holder let go."""
    order, released, started = [], [0.0], []

    async def turn(i: int):
        async with stores[i % len(stores)].lock(CONVERSATION, wait_time_in_seconds=look_again):
            started.append(time.monotonic())
            order.append(i)

    async with stores[0].lock(CONVERSATION):
        tasks = []
        for i in range(waiters):
            tasks.append(asyncio.create_task(turn(i)))
            await asyncio.sleep(0.02)  # each takes its ticket before the next arrives
        released[0] = time.monotonic()
    await asyncio.gather(*tasks)
    return order, started[0] - released[0]


def test_two_processes_never_serve_one_conversation_twice_at_once(redis_port):
    """Rasa's own Redis store, in this same script, ran two turns at once and left the conversation
    locked until its tickets expired (docs/performance.md); this store must do neither."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        import redis
        from rasa_server.lock_store import ConversationLockStore
        from rasa.utils.endpoints import EndpointConfig

        store = ConversationLockStore(EndpointConfig(url="127.0.0.1", port={redis_port}, db=0, store="redis"))
        counter = redis.Redis(port={redis_port})
        overlaps = 0

        async def turn():
            global overlaps
            async with store.lock("{CONVERSATION}"):
                overlaps += counter.incr("inside") != 1
                await asyncio.sleep(0.002)
                counter.decr("inside")

        async def main():
            for _ in range(25):
                await asyncio.wait_for(asyncio.gather(*[turn() for _ in range(4)]), 10)
        asyncio.run(main())
        print(overlaps)
    """)
    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert [int(o) for o in outputs] == [0, 0]  # 200 turns, never two at once
    assert time.monotonic() - started < 60
    assert asyncio.run(lock_keys(redis_store(redis_port))) == []


def test_turns_go_in_arrival_order_and_start_when_the_one_before_ends(redis_port):
    async def scenario():
        stores = [redis_store(redis_port), redis_store(redis_port)]  # two processes' clients
        # Looking again only every 5 s: a prompt start proves the waiter was woken.
        order, delay = await serve_in_order(stores, waiters=6, look_again=5)
        return order, delay, await lock_keys(stores[0])

    order, delay, keys = asyncio.run(scenario())
    assert order == list(range(6))
    assert delay < 1.0
    assert keys == []


def test_a_ticket_asked_for_again_is_the_same_ticket(redis_port):
    """Sent again after its answer was lost, the request gets its own ticket back, not a second."""
    async def scenario():
        store = redis_store(redis_port)
        keys = store._queues.keys("retried-conversation")
        first = await store._queues.redis.eval(ISSUE, 2, *keys, 60_000, "a1b2c3")
        again = await store._queues.redis.eval(ISSUE, 2, *keys, 60_000, "a1b2c3")
        other = await store._queues.redis.eval(ISSUE, 2, *keys, 60_000, "d4e5f6")
        queued = await store._queues.redis.zcard(keys[0])
        await store._queues.redis.delete(*keys)
        return first, again, other, queued

    assert asyncio.run(scenario()) == (1, 1, 2, 2)


def test_keys_name_no_conversation_id(redis_port):
    async def scenario():
        store = redis_store(redis_port)
        async with store.lock(CONVERSATION):
            return await lock_keys(store)

    keys = asyncio.run(scenario())
    assert len(keys) == 2 and not any(CONVERSATION in key for key in keys)


def test_a_ticket_left_by_a_dead_process_expires(redis_port):
    async def scenario():
        store = redis_store(redis_port)
        queues = store._queues
        # What a process killed while holding the lock leaves: a ticket nobody gives back.
        await queues.redis.eval(ISSUE, 2, *queues.keys(CONVERSATION), 600, "dead0process")
        started = time.monotonic()
        async with store.lock(CONVERSATION, wait_time_in_seconds=0.1):
            waited = time.monotonic() - started
        return waited, await lock_keys(store)

    waited, keys = asyncio.run(scenario())
    assert 0.45 <= waited < 3
    assert keys == []


def test_a_killed_process_holds_its_conversations_for_a_lease_not_the_lifetime(redis_port):
    """Rasa killed mid-turn: its citizens wait a lease (here 1 s), not TICKET_LOCK_LIFETIME (60 s)."""
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from rasa_server import lock_store
        from rasa.utils.endpoints import EndpointConfig

        lock_store.LEASE_SECONDS = 1.0
        store = lock_store.ConversationLockStore(EndpointConfig(url="127.0.0.1", port={redis_port}, db=0, store="redis"))

        async def main():
            async with store.lock("{CONVERSATION}"):  # Rasa's lifetime, 60 s
                print("held", flush=True)
                await asyncio.sleep(3)  # renewed meanwhile
                print("still", flush=True)
                await asyncio.sleep(600)
        asyncio.run(main())
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"

        async def waiter():
            store = redis_store(redis_port)
            async with store.lock(CONVERSATION, wait_time_in_seconds=0.1):
                entered = time.monotonic()
            return entered, await lock_keys(store)

        async def scenario():
            task = asyncio.create_task(waiter())
            still = await asyncio.to_thread(process.stdout.readline)  # the holder renewed past its lease
            assert still.strip() == "still" and not task.done()
            process.kill()
            killed = time.monotonic()
            entered, keys = await task
            return entered - killed, keys

        waited, keys = asyncio.run(scenario())
    finally:
        process.kill()
        process.wait()
    assert waited < 2.5  # at most the lease (1 s) plus a look again, not 60 s
    assert keys == []


def test_no_turn_holds_a_conversation_beyond_rasas_lifetime(redis_port, monkeypatch):
    monkeypatch.setattr(lock_store, "LEASE_SECONDS", 0.6)

    async def scenario():
        holder, other = redis_store(redis_port), redis_store(redis_port)
        entered = []

        async def wait_then_enter():
            await asyncio.sleep(0.1)
            async with other.lock(CONVERSATION, wait_time_in_seconds=0.1):
                entered.append(time.monotonic())

        started = time.monotonic()
        task = asyncio.create_task(wait_then_enter())
        async with holder.lock(CONVERSATION, lock_lifetime=1.2):
            await asyncio.sleep(3)  # a turn stuck past its lifetime
            left = time.monotonic()
        await task
        return entered[0] - started, left - started

    entered, left = asyncio.run(scenario())
    assert 1.2 <= entered < 2.5 < left  # renewed past the 0.6 s lease, not past the 1.2 s lifetime


def test_a_turn_cancelled_while_waiting_or_taking_its_ticket_leaves_nothing(redis_port):
    async def scenario():
        store = redis_store(redis_port)

        async def turn():
            async with store.lock(CONVERSATION, wait_time_in_seconds=5):
                pass

        async with store.lock(CONVERSATION):
            with pytest.raises(asyncio.TimeoutError):  # the channel's turn timeout, while waiting
                await asyncio.wait_for(turn(), 0.2)
        # Cancelled while its ticket was being issued: the ticket is given back once issued.
        taking = asyncio.create_task(turn())
        await asyncio.sleep(0)
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        started = time.monotonic()
        await asyncio.wait_for(turn(), 3)
        return time.monotonic() - started, await lock_keys(store)

    waited, keys = asyncio.run(scenario())
    assert waited < 1.0  # not held up by either cancelled turn's ticket
    assert keys == []


def test_redis_down_fails_the_turn_at_once():
    async def scenario():
        store = redis_store(free_port())  # nothing listens there
        started = time.monotonic()
        with pytest.raises(LockError):
            async with store.lock(CONVERSATION):
                pass
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_the_first_turn_after_a_restart_of_redis_gets_the_lock(tmp_path):
    """The store's pooled connection was broken by the restart: the turn still goes through."""
    async def scenario(server: Stack):
        store = redis_store(server.redis_port)
        async with store.lock(CONVERSATION):
            pass
        server.stop_redis()
        server.start_redis()
        async with store.lock(CONVERSATION):  # on the connection the restart broke, then a fresh one
            held = await lock_keys(store)
        server.stop_redis()
        with pytest.raises(LockError):  # while it is down: the turn fails, as it must
            async with store.lock(CONVERSATION):
                pass
        server.start_redis()
        async with store.lock(CONVERSATION):
            return held, await lock_keys(store)

    with a_redis(tmp_path) as server:
        held, held_again = asyncio.run(scenario(server))
    assert len(held) == len(held_again) == 2


def test_in_memory_turns_one_at_a_time_in_arrival_order(monkeypatch):
    monkeypatch.setenv("SANIC_WORKERS", "1")

    async def scenario():
        store = ConversationLockStore(EndpointConfig(store="in_memory"))
        inside, most = [0], [0]

        async def busy():
            async with store.lock(CONVERSATION):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                await asyncio.sleep(0.001)
                inside[0] -= 1

        await asyncio.gather(*[busy() for _ in range(50)])
        order, delay = await serve_in_order([store], waiters=5, look_again=5)
        async with store.lock(CONVERSATION):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(busy(), 0.05)
        return most[0], order, delay, len(store._queues)

    most, order, delay, left = asyncio.run(scenario())
    assert most == 1
    assert order == list(range(5))
    assert delay < 1.0
    assert left == 0  # no entry kept for a conversation nobody holds or waits for


def test_endpoints_yml_builds_this_store_and_refuses_memory_for_several_workers(monkeypatch, redis_port):
    from rasa.core.utils import AvailableEndpoints

    for name in ("ACTION_ENDPOINT_URL", "ACTION_SERVER_TOKEN", "TRACKER_DB_HOST", "TRACKER_DB_PORT",
                 "TRACKER_DB_NAME", "TRACKER_DB_USER", "TRACKER_DB_PASSWORD"):
        monkeypatch.setenv(name, "unused here")
    for name, value in {"LOCK_STORE_TYPE": "redis", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
                        "REDIS_DB": "0", "REDIS_PASSWORD": "", "REDIS_TLS": "false", "REDIS_CA_FILE": "",
                        "SANIC_WORKERS": "2"}.items():
        monkeypatch.setenv(name, value)
    store = LockStore.create(AvailableEndpoints.read_endpoints(str(ROOT / "endpoints.yml")).lock_store)
    assert isinstance(store, ConversationLockStore) and store.store == "redis"

    monkeypatch.setenv("LOCK_STORE_TYPE", "in_memory")
    with pytest.raises(ValueError, match="SANIC_WORKERS=2 needs LOCK_STORE_TYPE=redis"):
        LockStore.create(AvailableEndpoints.read_endpoints(str(ROOT / "endpoints.yml")).lock_store)
    monkeypatch.setenv("SANIC_WORKERS", "1")
    store = LockStore.create(AvailableEndpoints.read_endpoints(str(ROOT / "endpoints.yml")).lock_store)
    assert store.store == "in_memory"
    with pytest.raises(ValueError, match="in_memory or redis"):
        ConversationLockStore(EndpointConfig(store="memcached"))


def test_redis_with_a_password(tmp_path, monkeypatch):
    """REDIS_PASSWORD: the Redis the stack starts requires it, and only the right one gets in."""
    monkeypatch.setenv("REDIS_PASSWORD", "lock-store-test-password")

    async def scenario(port: int, password: str) -> str:
        store = ConversationLockStore(EndpointConfig(url="127.0.0.1", port=port, store="redis", password=password))
        try:
            async with store.lock(CONVERSATION):
                return "held"
        except LockError as exc:
            return str(exc)

    with a_redis(tmp_path) as server:
        assert asyncio.run(scenario(server.redis_port, "lock-store-test-password")) == "held"
        for wrong in ("", "guess"):
            error = asyncio.run(scenario(server.redis_port, wrong))
            assert error.startswith("Redis lock store unavailable") and "guess" not in error


def test_redis_over_tls_checks_the_certificate_and_its_name(tmp_path):
    cert, key = self_signed_certificate_for_127_0_0_1(tmp_path)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)

    async def scenario(host: str, **settings) -> str:
        store = ConversationLockStore(EndpointConfig(url=host, port=port, store="redis", **settings))
        try:
            async with store.lock(CONVERSATION):
                return "held"
        except LockError:
            return "refused"

    try:
        for _ in range(50):
            if asyncio.run(scenario("127.0.0.1", use_ssl="true", ssl_ca_certs=str(cert))) == "held":
                break
            time.sleep(0.1)
        assert asyncio.run(scenario("127.0.0.1", use_ssl="true", ssl_ca_certs=str(cert))) == "held"
        assert asyncio.run(scenario("127.0.0.1", use_ssl="true", ssl_ca_certs="")) == "refused"  # not a trusted CA
        assert asyncio.run(scenario("localhost", use_ssl="true", ssl_ca_certs=str(cert))) == "refused"  # wrong name
        assert asyncio.run(scenario("127.0.0.1", use_ssl="false")) == "refused"  # no TLS, no answer
        with pytest.raises(ValueError, match="REDIS_TLS must be true or false"):
            ConversationLockStore(EndpointConfig(url="127.0.0.1", port=port, store="redis", use_ssl="maybe"))
    finally:
        server.terminate()
        server.wait(timeout=10)


def self_signed_certificate_for_127_0_0_1(folder):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "redis.crt", folder / "redis.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file
