"""One turn at a time per conversation, in arrival order, across every Rasa process.

Rasa takes a conversation's lock around each message. Its Redis lock store keeps a
conversation's tickets as one JSON value that each process reads, changes and writes back in
three separate commands, so two processes serving the same citizen at the same moment (a
citizen sending three short messages at once, as people do on WhatsApp; two Sanic workers or two
replicas) overwrite each other's changes. Measured here with two processes taking one
conversation's lock 4 at a time: two turns ran at once (the tracker of one would overwrite the
other's), and a finished ticket written back by the other process left the conversation locked
until the ticket's lifetime ran out (60 s), each message meanwhile answered with the apology.
Its waiters also look again only once a second, and its Redis client stops the event loop for
every command.

This store keeps Rasa's ticket design (first come, first served; no turn holds a conversation
longer than TICKET_LOCK_LIFETIME seconds) with every change to a conversation's tickets made by
one Lua script, which Redis runs atomically. A ticket is a lease of LEASE_SECONDS that its
turn, while alive, renews (up to that lifetime): the tickets of a process that died (killed,
out of memory) expire within seconds, not after the whole lifetime, during which every message
of the citizens it was serving would wait and get the apology (seen in `make chaos`):
- issue: the next number (INCR) joins the conversation's queue, a sorted set (asked again by
  the same turn after a broken connection, it answers with the ticket already issued);
- turn: drop expired tickets; is this ticket first in the queue, still waiting, or gone;
- renew: this ticket expires a lease later, if it is still there;
- finish: drop this ticket; an empty queue leaves no key behind.
The keys name a hash of the conversation id, not the id (on WhatsApp, a phone number), and keep
its keys in one Redis Cluster slot. Finishing a turn wakes the ticket next in line, which
waits on a list of its own (BLPOP), so it starts at once whichever process holds it; waiters also
look again every half second, which is how they notice a ticket before them that expired. Redis
is reached with redis-py's asyncio client, so the event loop never waits on it, with a password
(REDIS_PASSWORD) and over TLS (REDIS_TLS, REDIS_CA_FILE) where the Redis asks for them.

With one Rasa process (LOCK_STORE_TYPE=in_memory) the queue is an asyncio.Lock per conversation,
which wakes its waiters in arrival order the moment the turn before ends. It refuses to start
with SANIC_WORKERS above 1, as Rasa's in-memory store does.

endpoints.yml names this class as the lock store, with `store: in_memory` or `store: redis`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator

from rasa.core.lock_store import (
    DEFAULT_REDIS_LOCK_STORE_KEY_PREFIX,
    DEFAULT_SOCKET_TIMEOUT_IN_SECONDS,
    LOCK_LIFETIME,
    LockError,
    LockStore,
)
from rasa.utils.endpoints import EndpointConfig

from rasa_server import metrics

log = logging.getLogger(__name__)

# A waiter is woken the moment the turn before it ends; it also looks again this often, which
# is how it notices a ticket before it that expired (a process died holding it).
LOOK_AGAIN_SECONDS = 0.5
WAKE_TOKEN_MS = 10_000
# A ticket's lease, renewed by its living turn a third of it before it ends: a dead process's
# tickets expire within this, well before the ~13 s a restarted Rasa takes to answer again.
LEASE_SECONDS = 6.0

# KEYS: the queue (sorted set of "number:expires_ms:request", scored by number), the last number
# issued. The request is a random id of the turn asking: a request sent again (its answer lost
# with a broken connection) gets the ticket it already has, not a second one nobody would finish.
_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
ISSUE = _NOW_MS + """
local lifetime = tonumber(ARGV[1])
for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local number, request = string.match(entry, '^(%d+):%d+:(%w+)$')
  if request == ARGV[2] then return tonumber(number) end
end
local number = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], number, number .. ':' .. (now + lifetime) .. ':' .. ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < lifetime then redis.call('PEXPIRE', key, lifetime) end
end
return number
"""
# 1: this ticket's turn; 0: a ticket before it is still being served; -1: this ticket is gone.
TURN = _NOW_MS + """
local mine = tonumber(ARGV[1])
local first, found = nil, false
for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local number, expires = string.match(entry, '^(%d+):(%d+):')
  number = tonumber(number)
  if tonumber(expires) <= now then
    redis.call('ZREM', KEYS[1], entry)
  else
    if first == nil then first = number end
    if number == mine then found = true end
  end
end
if not found then return -1 end
if first ~= mine then return 0 end
redis.call('DEL', KEYS[1] .. ':wake:' .. mine)
return 1
"""
# 1: renewed until now + ARGV[2] ms; 0: the ticket is gone (expired: its turn was too slow to renew).
RENEW = _NOW_MS + """
local lease = tonumber(ARGV[2])
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])) do
  local expires, request = string.match(entry, '^%d+:(%d+):(%w+)$')
  if tonumber(expires) > now then
    redis.call('ZREM', KEYS[1], entry)
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1] .. ':' .. (now + lease) .. ':' .. request)
    for _, key in ipairs(KEYS) do
      if redis.call('PTTL', key) < lease then redis.call('PEXPIRE', key, lease) end
    end
    return 1
  end
end
return 0
"""
# A ticket waits on a list of its own, KEYS[1]..':wake:'..its number; finishing the ticket being
# served pushes to the next one's.
FINISH = """
local function number_of(entry) return entry and tonumber(string.match(entry, '^(%d+):')) end
local served = number_of(redis.call('ZRANGE', KEYS[1], 0, 0)[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
redis.call('DEL', KEYS[1] .. ':wake:' .. ARGV[1])
local next = number_of(redis.call('ZRANGE', KEYS[1], 0, 0)[1])
if next == nil then
  redis.call('DEL', KEYS[1], KEYS[2])
elseif served == tonumber(ARGV[1]) then
  local wake = KEYS[1] .. ':wake:' .. next
  redis.call('RPUSH', wake, 1)
  redis.call('PEXPIRE', wake, ARGV[2])
end
return 0
"""


class ConversationLockStore(LockStore):
    """Rasa's lock store interface (lock()), on Redis or in this process's memory."""

    def __init__(self, endpoint_config: EndpointConfig | None = None) -> None:
        config = endpoint_config or EndpointConfig()
        store = config.kwargs.get("store") or "in_memory"
        if store == "redis":
            self._queues: _RedisQueues | _LocalQueues = _RedisQueues(config)
        elif store == "in_memory":
            workers = os.environ.get("SANIC_WORKERS", "1")
            if workers.strip() not in ("", "1"):
                raise ValueError(f"SANIC_WORKERS={workers} needs LOCK_STORE_TYPE=redis: workers do not "
                                 "share memory, so an in-memory lock cannot keep a citizen's turns in order")
            self._queues = _LocalQueues()
        else:
            raise ValueError(f"lock store: store must be in_memory or redis, not {store!r}")
        self.store = store

    @asynccontextmanager
    async def lock(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME,
                   wait_time_in_seconds: float = LOOK_AGAIN_SECONDS) -> AsyncIterator[None]:
        """Wait for this conversation's earlier turns to end, then hold it until the block ends."""
        waited = time.monotonic()
        async with self._queues.hold(conversation_id, lock_lifetime, wait_time_in_seconds):
            metrics.LOCK_WAIT.labels(self.store).observe(time.monotonic() - waited)
            yield

    # Rasa's ticket-by-ticket methods read, change and write back a whole TicketLock, which is
    # what makes its Redis store unsafe; here tickets change only inside lock().
    def _not_here(self, *args, **kwargs):
        raise NotImplementedError("ConversationLockStore changes tickets only inside lock()")

    get_lock = save_lock = delete_lock = issue_ticket = finish_serving = cleanup = _not_here


class _LocalQueues:
    """One process: an asyncio.Lock per conversation, dropped when nobody holds or waits for it.
    No lifetime: a turn cannot outlive the process, and a cancelled turn lets go at once."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, conversation_id: str, lifetime: float, look_again: float) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(conversation_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[conversation_id]

    def __len__(self) -> int:
        return len(self._locks)


class _RedisQueues:
    """Several processes: each conversation's tickets in Redis, changed only by the scripts above."""

    def __init__(self, config: EndpointConfig) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        kwargs = config.kwargs
        timeout = float(kwargs.get("socket_timeout") or DEFAULT_SOCKET_TIMEOUT_IN_SECONDS)
        tls = _flag(kwargs.get("use_ssl"), "REDIS_TLS")
        # Empty values (REDIS_PASSWORD="", REDIS_CA_FILE="") mean none: endpoints.yml always names them.
        self.redis = redis.asyncio.Redis(
            host=config.url or "localhost", port=int(kwargs.get("port") or 6379), db=int(kwargs.get("db") or 0),
            username=kwargs.get("username") or None, password=kwargs.get("password") or None,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            # TLS as for any server: the certificate checked against REDIS_CA_FILE or the system's
            # CAs, and its name against REDIS_HOST (which redis-py does not check by default).
            ssl=tls, ssl_ca_certs=kwargs.get("ssl_ca_certs") or None, ssl_cert_reqs="required",
            ssl_check_hostname=tls,
            # A pooled connection that a restart of Redis broke fails its next command: that
            # command is sent once more on a fresh connection, so the first turn after the
            # restart does not fail (as the tracker store does with PostgreSQL).
            retry_on_error=[RedisConnectionError], retry=Retry(NoBackoff(), 1))
        self.prefix = (kwargs.get("key_prefix") or "") + DEFAULT_REDIS_LOCK_STORE_KEY_PREFIX
        self._issue = self.redis.register_script(ISSUE)
        self._turn = self.redis.register_script(TURN)
        self._finish = self.redis.register_script(FINISH)
        self._renew = self.redis.register_script(RENEW)

    def keys(self, conversation_id: str) -> list[str]:
        tag = hashlib.sha256(conversation_id.encode()).hexdigest()[:32]
        return [f"{self.prefix}{{{tag}}}:queue", f"{self.prefix}{{{tag}}}:last"]

    @asynccontextmanager
    async def hold(self, conversation_id: str, lifetime: float, look_again: float) -> AsyncIterator[None]:
        keys = self.keys(conversation_id)
        lease = min(lifetime, LEASE_SECONDS)
        ticket = await self._take_ticket(keys, lease)
        renewing = asyncio.ensure_future(self._keep_renewing(keys, ticket, lease, time.monotonic() + lifetime))
        try:
            await self._wait_for_turn(keys, ticket, look_again)
            yield
        finally:
            renewing.cancel()
            await self._give_back(keys, ticket)

    async def _keep_renewing(self, keys: list[str], ticket: int, lease: float, until: float) -> None:
        """While the turn waits or runs: its ticket a lease ahead, never beyond `until`."""
        while True:
            await asyncio.sleep(lease / 3)
            left = until - time.monotonic()
            if left <= 0:
                return  # TICKET_LOCK_LIFETIME: the ticket expires as Rasa's would
            try:
                if not await self._run(self._renew, keys, [ticket, max(1, int(min(lease, left) * 1000))]):
                    return
            except LockError as exc:  # Redis away a moment: try again at the next third
                log.warning("lock store: a ticket was not renewed (%s)", exc)

    async def _take_ticket(self, keys: list[str], lifetime: float) -> int:
        # A cancelled wait must not leave a ticket nobody will give back (the conversation would
        # wait for it to expire): the script runs to its end and its ticket is given back then.
        request = secrets.token_hex(8)
        issuing = asyncio.ensure_future(self._run(self._issue, keys, [max(1, int(lifetime * 1000)), request]))
        try:
            return int(await asyncio.shield(issuing))
        except asyncio.CancelledError:
            issuing.add_done_callback(lambda done: done.cancelled() or done.exception() or
                                      asyncio.ensure_future(self._give_back(keys, int(done.result()))))
            raise

    async def _wait_for_turn(self, keys: list[str], ticket: int, look_again: float) -> None:
        while True:
            turn = await self._run(self._turn, keys, [ticket])
            if turn == 1:
                return
            if turn == -1:
                raise LockError("this turn's ticket expired before its turn came (TICKET_LOCK_LIFETIME)")
            with _redis_errors_as_lock_errors():
                await self.redis.blpop([f"{keys[0]}:wake:{ticket}"], timeout=look_again)

    async def _give_back(self, keys: list[str], ticket: int) -> None:
        try:
            await self._run(self._finish, keys, [ticket, WAKE_TOKEN_MS])
        except LockError as exc:  # the ticket expires on its own; the next turn waits until then
            log.warning("lock store: a ticket was not given back (%s)", exc)

    async def _run(self, script, keys: list[str], args: list[int]) -> int:
        with _redis_errors_as_lock_errors():
            return await script(keys=keys, args=args)


def _flag(value: object, name: str) -> bool:
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false, not {value!r}")


@contextmanager
def _redis_errors_as_lock_errors() -> Iterator[None]:
    """Redis down or slow: the turn fails as Rasa's lock stores fail (the channel apologises)."""
    import redis.exceptions

    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise LockError(f"Redis lock store unavailable ({type(exc).__name__})") from None
