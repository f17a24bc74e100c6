"""One turn, the same for every channel: the gate, then Rasa, within a time limit.

`run_turn` passes the message through the gate shared by the channels (rasa_server/gate.py:
notifications waiting for the conversation, and whether an officer has it), then, unless an
officer does, runs Rasa's turn (at most `limit` at once, at most `timeout` seconds), and says
what came of it in a TurnOutcome. It counts the turn (count_turn) and says nothing itself: each
channel decides what to do with the outcome (REST answers with the apology; WhatsApp apologises
once and keeps a failed message pending to run it again).

What counts as failed, the same for every channel:
- the gate could not read the database (cause `database`): the turn would fail too;
- the conversation store could not read or save the conversation (`conversation_store`), Rasa
  took longer than `timeout` (`timeout`) or raised (`error`): nothing of the turn was kept, so
  what it said is dropped (it would describe a state the conversation lost);
- Rasa's processor logged an error (`action_failed`): it catches an action that failed (the
  action server is down) and carries on, often saying nothing, and its log record is the only
  sign. The turn was kept, and what it said before is kept too.
A turn that ran but said nothing is not failed; its cause is `no_reply`.
asyncio.CancelledError, KeyboardInterrupt and SystemExit are not failures: they propagate.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import UserMessage

from backend.db import Database
from backend.repository import utcnow

from . import metrics
from .gate import channel_gate
from .tracker_store import TrackerStoreUnavailable

log = logging.getLogger(__name__)

# The logger whose error records mean that an action failed within the turn.
RASA_PROCESSOR = "rasa.core.processor"


@dataclass
class TurnOutcome:
    """What came of one turn. `replies`: Rasa's messages as the message's output channel
    collected them ([] when the turn failed other than by an action). `pending`: notifications
    to say first. `officer_ack`: said instead of a turn while an officer has the conversation.
    `failure`: why the turn failed (None when it ran). `cause`: why it gets the apology, one of
    metrics.APOLOGY_CAUSES (None when it needs none)."""
    replies: list[dict] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    officer_ack: str | None = None
    failure: str | None = None
    cause: str | None = None


@dataclass
class _Watch:
    error: str | None = None


# Set while Rasa runs a turn; the filter below finds it in the context of the turn's task.
_current: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("rasa_turn_watch", default=None)


class TurnErrorWatch(logging.Filter):
    """Notes the first error Rasa's processor logs during a turn."""

    def filter(self, record: logging.LogRecord) -> bool:
        watch = _current.get()
        if watch is not None and watch.error is None and record.levelno >= logging.ERROR:
            watch.error = f"{record.name} logged an error"
        return True


def watch_rasa_errors() -> None:
    # On the logger itself, not a handler: it sees the record whatever logging is configured.
    processor = logging.getLogger(RASA_PROCESSOR)
    if not any(isinstance(f, TurnErrorWatch) for f in processor.filters):
        processor.addFilter(TurnErrorWatch())


def count_turn(channel: str, started: float, cause: str | None) -> None:
    metrics.TURN_SECONDS.labels(channel, "answered" if cause is None else "apology").observe(
        time.monotonic() - started)
    if cause is not None:
        metrics.APOLOGIES.labels(channel, cause).inc()


async def run_turn(on_new_message: Callable[[UserMessage], Awaitable[Any]], message: UserMessage, *,
                   channel: str, database: Callable[[], Database | None], timeout: float,
                   limit: asyncio.Semaphore | None = None, retry: bool = False, clock=utcnow) -> TurnOutcome:
    """Run one turn of `message`, whose output channel keeps what Rasa says in `.messages`.

    `database` gives the gate's database (None: no gate, as for a channel tested alone); it is
    called in an executor thread, with the gate, in this turn's context so that their log lines
    keep the request id. `retry`: the message failed before and nobody waits for this attempt,
    which is counted only if it runs."""
    started = time.monotonic()
    outcome = await _run(on_new_message, message, database, timeout, limit, clock)
    if outcome.failure is None or not retry:
        count_turn(channel, started, outcome.cause)
    return outcome


async def _run(on_new_message, message: UserMessage, database, timeout: float,
               limit: asyncio.Semaphore | None, clock) -> TurnOutcome:
    def gate() -> tuple[list[str], str | None]:
        db = database()
        if db is None:
            return [], None
        return channel_gate(db, message.sender_id, message.text or "", clock)

    try:
        pending, officer_ack = await asyncio.get_running_loop().run_in_executor(
            None, contextvars.copy_context().run, gate)
    except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable, or a broken schema
        return TurnOutcome(failure=f"gate: {type(exc).__name__}", cause="database")
    if officer_ack is not None:
        return TurnOutcome(pending=pending, officer_ack=officer_ack)

    watch_rasa_errors()
    watch = _Watch()
    token = _current.set(watch)
    try:
        if limit is None:
            await asyncio.wait_for(on_new_message(message), timeout)
        else:
            async with limit:
                await asyncio.wait_for(on_new_message(message), timeout)
    except asyncio.TimeoutError:
        return TurnOutcome(pending=pending, failure=f"no answer within {timeout:g} s", cause="timeout")
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the tracker store signals with a BaseException
        cause = "conversation_store" if isinstance(exc, TrackerStoreUnavailable) else "error"
        return TurnOutcome(pending=pending, failure=type(exc).__name__, cause=cause)
    finally:
        _current.reset(token)

    replies = list(getattr(message.output_channel, "messages", None) or [])
    if watch.error is not None:
        return TurnOutcome(replies, pending, failure=watch.error, cause="action_failed")
    return TurnOutcome(replies, pending, cause=None if replies else "no_reply")
