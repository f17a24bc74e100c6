"""The turn every channel runs (rasa_server/turn.py), called directly on a real asyncio loop:
Rasa's side is an on_new_message callable that answers, says nothing, is slow, raises or logs a
failed action; the gate runs on the test PostgreSQL, or on a database nobody listens for."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

from backend.db import Database
from backend.events import REQUEST_ID
from backend.tickets import Tickets
from conftest import free_port
from rasa_server import metrics
from rasa_server.gate import HANDOFF_ACK
from rasa_server.tracker_store import TrackerStoreUnavailable
from rasa_server.turn import TurnOutcome, run_turn
from rasa_server.wording import WORDING

SENDER = "web-turn"


def sample(metric, **labels) -> float:
    return sum(s.value for family in metric.collect() for s in family.samples
               if s.name.endswith(("_total", "_count")) and all(s.labels.get(k) == v for k, v in labels.items()))


def turn(handler, *, database=lambda: None, timeout: float = 5.0, text: str = "halo", **kwargs) -> TurnOutcome:
    message = UserMessage(text, CollectingOutputChannel(), SENDER, input_channel="rest")
    return asyncio.run(run_turn(handler, message, channel="rest", database=database, timeout=timeout, **kwargs))


def counted(handler, cause: str | None, **kwargs) -> TurnOutcome:
    """The turn's outcome, having checked that it was counted once, under `cause`."""
    outcome_label = "answered" if cause is None else "apology"
    turns = sample(metrics.TURN_SECONDS, channel="rest", outcome=outcome_label)
    apologies = sample(metrics.APOLOGIES, channel="rest", cause=cause) if cause else 0
    outcome = turn(handler, **kwargs)
    assert outcome.cause == cause
    assert sample(metrics.TURN_SECONDS, channel="rest", outcome=outcome_label) == turns + 1
    if cause:
        assert sample(metrics.APOLOGIES, channel="rest", cause=cause) == apologies + 1
    return outcome


async def answer(message: UserMessage) -> None:
    await message.output_channel.send_text_message(message.sender_id, f"jawaban {message.text}")


def test_a_turn_that_answers_gives_its_replies():
    outcome = counted(answer, None)
    assert outcome == TurnOutcome(replies=[{"recipient_id": SENDER, "text": "jawaban halo"}])


def test_a_turn_that_says_nothing_ran_and_needs_the_apology():
    async def silent(message):
        return None

    assert counted(silent, "no_reply") == TurnOutcome(cause="no_reply")


def test_a_slow_turn_is_cut_short_and_what_it_said_dropped():
    async def slow(message):
        await answer(message)
        await asyncio.sleep(5)

    started = time.monotonic()
    outcome = counted(slow, "timeout", timeout=0.2)
    assert time.monotonic() - started < 1.5
    assert outcome.replies == [] and outcome.failure == "no answer within 0.2 s"


def test_an_unavailable_conversation_store_fails_the_turn():
    async def lost(message):
        await answer(message)
        raise TrackerStoreUnavailable("events table unreachable")

    outcome = counted(lost, "conversation_store")
    assert outcome.replies == [] and outcome.failure == "TrackerStoreUnavailable"


def test_another_error_fails_the_turn_without_its_words():
    async def broken(message):
        raise RuntimeError(f"database gone {message.text}")

    outcome = counted(broken, "error", text="kode 123456")
    assert outcome.replies == [] and outcome.failure == "RuntimeError"


def test_a_failed_action_keeps_what_the_turn_said():
    async def action_down(message):
        await answer(message)
        logging.getLogger("rasa.core.processor").error("Encountered an exception while running action")

    outcome = counted(action_down, "action_failed")
    assert outcome.replies == [{"recipient_id": SENDER, "text": "jawaban halo"}]
    assert outcome.failure == "rasa.core.processor logged an error"
    # An error logged outside a turn is no turn's failure; the next turn is itself again.
    logging.getLogger("rasa.core.processor").error("between turns")
    assert counted(answer, None).failure is None


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_stopping_the_process_is_no_failure_of_the_turn(stop):
    async def stopped(message):
        raise stop()

    with pytest.raises(stop):
        turn(stopped)


def test_a_retry_that_fails_again_is_not_counted_one_that_runs_is():
    async def broken(message):
        raise RuntimeError("still down")

    before = sample(metrics.TURN_SECONDS, channel="rest")
    assert turn(broken, retry=True).cause == "error"
    assert sample(metrics.TURN_SECONDS, channel="rest") == before
    assert counted(answer, None, retry=True).replies


def test_the_limit_keeps_turns_apart():
    running, most = [0], [0]

    async def counting(message):
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        await answer(message)

    async def three_at_once():
        limit = asyncio.Semaphore(1)
        messages = [UserMessage(f"m{n}", CollectingOutputChannel(), f"s{n}") for n in range(3)]
        return await asyncio.gather(*(run_turn(counting, m, channel="rest", database=lambda: None, timeout=5,
                                               limit=limit) for m in messages))

    outcomes = asyncio.run(three_at_once())
    assert most[0] == 1 and [o.replies[0]["text"] for o in outcomes] == ["jawaban m0", "jawaban m1", "jawaban m2"]


def test_the_gate_says_waiting_notes_first_in_the_turns_context(backend, clock):
    backend.db.run(lambda cur: cur.execute(
        "INSERT INTO notifications (conversation_id, text, created_at) VALUES (%s, %s, %s)",
        (SENDER, "Laporan PL-1 sudah selesai.", clock())))
    seen = []

    def database():
        seen.append(REQUEST_ID.get())  # in the executor thread
        return backend.db

    async def with_request_id():
        REQUEST_ID.set("req-turn-1")
        message = UserMessage("halo", CollectingOutputChannel(), SENDER)
        return await run_turn(answer, message, channel="rest", database=database, timeout=5, clock=clock)

    outcome = asyncio.run(with_request_id())
    assert outcome == TurnOutcome(replies=[{"recipient_id": SENDER, "text": "jawaban halo"}],
                                  pending=["Laporan PL-1 sudah selesai."])
    assert seen == ["req-turn-1"]
    assert turn(answer, database=lambda: backend.db, clock=clock).pending == []  # said once


def test_while_an_officer_has_the_conversation_rasa_does_not_see_the_message(backend, clock):
    Tickets(backend.repo, WORDING).start_handoff(SENDER, "rest", ["halo"])
    asked = []

    async def rasa(message):
        asked.append(message.text)

    outcome = counted(rasa, None, database=lambda: backend.db, clock=clock, text="masih di sana?")
    assert outcome == TurnOutcome(officer_ack=HANDOFF_ACK) and asked == []


def test_a_database_down_fails_the_turn_before_rasa():
    down = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none", name="test_down")
    asked = []

    async def rasa(message):
        asked.append(message.text)

    outcome = counted(rasa, "database", database=lambda: down)
    assert outcome == TurnOutcome(failure="gate: DatabaseUnavailable", cause="database") and asked == []
