"""WhatsApp during an outage: no message Meta delivered is dropped.

Meta gets its 200 once a message is recorded (pending) in PostgreSQL; while the database is down
it gets a 503 and delivers again later. A message whose turn fails (Rasa raising, the database
gone mid-turn, a process stopped mid-turn) gets the apology once and is run again when things
are back; Meta redelivering the same payloads changes nothing. Each message ends with exactly
one normal answer.

The channel on a real Sanic server, the fake Meta (simulator/fake_graph.py), a stand-in for Rasa
(tests/whatsapp_support.py); the database-down case on an embedded PostgreSQL of its own, so
that stopping it does not disturb the other tests.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
import uuid
from collections import Counter

import pytest

from backend import embedded
from backend.db import Database
from conftest import free_port
from tools.stack import MODEL, ROOT, Stack
from whatsapp import texts
from whatsapp.channel import WhatsAppInput
from simulator.fake_graph import FakeGraph, post_webhook, text, webhook
from whatsapp.settings import WhatsAppSettings
from whatsapp_support import APP_SECRET, CITIZEN, OTHER, VERIFY_TOKEN, ChannelServer, Rasa

QUICK = {"WHATSAPP_RETRY_BASE_SECONDS": "0.01", "WHATSAPP_RETRY_MAX_SECONDS": "0.05",
         "TURN_TIMEOUT_SECONDS": "1.5", "WHATSAPP_PENDING_POLL_SECONDS": "0.2",
         "WHATSAPP_PENDING_RETRY_SECONDS": "0.3", "WHATSAPP_PENDING_LEASE_SECONDS": "2",
         "WHATSAPP_SHUTDOWN_GRACE_SECONDS": "0.2"}


class StoreDown(BaseException):
    """Like backend.tracker_store.TrackerStoreUnavailable: a BaseException on purpose."""


@pytest.fixture
def fake():
    with FakeGraph() as graph:
        yield graph


def settings_for(fake, database_url: str) -> WhatsAppSettings:
    return WhatsAppSettings.from_env({**fake.env(APP_SECRET, VERIFY_TOKEN), "DATABASE_URL": database_url, **QUICK})


def post(server, data):
    return post_webhook(server.url, data, APP_SECRET)


def answers(fake, to: str) -> list[str]:
    """The text of each message sent to `to` (a text, or the body of one with buttons)."""
    return [m["text"]["body"] if m["type"] == "text" else m["interactive"]["body"]["text"]
            for m in fake.sent(to) if m["type"] in ("text", "interactive")]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_messages_whose_turn_failed_are_answered_once_when_rasa_is_back(fake, database_url):
    rasa = Rasa()
    broken = {"on": True}

    async def restarting(message):
        if broken["on"]:
            raise RuntimeError("Rasa is restarting")
        return [{"text": f"jawaban {message.text}"}]

    rasa.reply = restarting
    server = ChannelServer(WhatsAppInput(settings_for(fake, database_url)), rasa).start()
    try:
        now = int(time.time())
        deliveries = [webhook([text(CITIZEN, "status vaksin", timestamp=now), text(OTHER, "halo", timestamp=now)]),
                      webhook([text(CITIZEN, "download sertifikat", timestamp=now + 1)])]
        for data in deliveries:
            assert post(server, data).status_code == 200  # recorded: Meta need not send it again
        wait_until(lambda: len(fake.sent()) >= 3, 10, "no apology during the outage")
        assert answers(fake, CITIZEN) == [texts.APOLOGY, texts.APOLOGY]
        assert answers(fake, OTHER) == [texts.APOLOGY]

        time.sleep(1.0)  # still broken: tried again, quietly (the apology only once per message)
        assert len(fake.sent()) == 3
        broken["on"] = False
        wait_until(lambda: len(fake.sent()) >= 6, 10, f"not answered after the outage: {fake.sent()}")
        # Meta redelivering the very same payloads (it did not see our 200, say): nothing more.
        for data in deliveries:
            assert post(server, data).status_code == 200
        fake.quiet_for(1.5)
    finally:
        server.stop()
    assert answers(fake, CITIZEN) == [texts.APOLOGY, texts.APOLOGY, "jawaban status vaksin",
                                      "jawaban download sertifikat"]
    assert answers(fake, OTHER) == [texts.APOLOGY, "jawaban halo"]


@pytest.fixture
def own_database():
    """An embedded PostgreSQL of this test's own, to stop and start. Under var/ as the session's
    (the server runs as another user when tests run as root, and pytest keeps its own temporary
    folders private to the user running it, whenever a session starts)."""
    data_dir = ROOT / "var" / f"test-outage-{uuid.uuid4().hex[:8]}" / "pgdata"
    data_dir.parent.mkdir(parents=True)
    url = embedded.start(data_dir, keep_running=True)
    yield data_dir, url
    embedded.stop(data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_database_down_refuses_then_answers_each_message_once_when_back(fake, own_database):
    data_dir, url = own_database
    database = Database(url, max_connections=2)
    rasa = Rasa()
    stop_mid_turn = {"text": None}

    async def answer(message):
        if message.text == stop_mid_turn["text"]:
            stop_mid_turn["text"] = None
            # The database goes away while this turn runs: Rasa cannot save the conversation.
            await asyncio.get_running_loop().run_in_executor(None, embedded.stop, data_dir)
            raise StoreDown()
        return [{"text": f"jawaban {message.text}"}]

    rasa.reply = answer
    server = ChannelServer(WhatsAppInput(settings_for(fake, url), database=database), rasa).start()
    try:
        assert post(server, webhook([text(CITIZEN, "mulai")])).status_code == 200
        fake.wait_for_sent(1)

        # Down when the webhooks arrive: refused, so Meta delivers them again later.
        embedded.stop(data_dir)
        during = [webhook([text(CITIZEN, "status vaksin")]), webhook([text(OTHER, "halo")])]
        assert [post(server, data).status_code for data in during] == [503, 503]
        time.sleep(0.5)
        assert len(fake.sent()) == 1 and rasa.texts() == ["mulai"]

        # Back: Meta's redeliveries (the same payloads) are taken in and answered.
        embedded.start(data_dir, keep_running=True)
        assert [post(server, data).status_code for data in during] == [200, 200]
        wait_until(lambda: len(fake.sent()) >= 3, 10, f"redeliveries not answered: {fake.sent()}")

        # Down in the middle of a turn: the apology, then the answer once it is back.
        stop_mid_turn["text"] = "download sertifikat"
        mid = webhook([text(CITIZEN, "download sertifikat")])
        assert post(server, mid).status_code == 200
        wait_until(lambda: texts.APOLOGY in answers(fake, CITIZEN), 10, "no apology mid-turn")
        time.sleep(0.5)
        embedded.start(data_dir, keep_running=True)
        wait_until(lambda: "jawaban download sertifikat" in answers(fake, CITIZEN), 15,
                   f"the message of the failed turn was dropped: {fake.sent()}")
        for data in during + [mid]:
            assert post(server, data).status_code == 200
        fake.quiet_for(1.5)
    finally:
        server.stop()
        database.close()
    assert answers(fake, CITIZEN) == ["jawaban mulai", "jawaban status vaksin", texts.APOLOGY,
                                      "jawaban download sertifikat"]
    assert answers(fake, OTHER) == ["jawaban halo"]
    assert Counter(m.text for m in rasa.received) == {"mulai": 1, "status vaksin": 1, "halo": 1,
                                                      "download sertifikat": 2}


def test_a_message_cut_off_by_a_restart_is_answered_once_by_the_next_process(fake, database_url):
    settings = settings_for(fake, database_url)
    hanging = Rasa()

    async def never(message):  # the process is stopped before this turn ends
        await asyncio.sleep(60)
        return [{"text": "terlambat"}]

    hanging.reply = never
    first = ChannelServer(WhatsAppInput(settings), hanging).start()
    data = webhook([text(CITIZEN, "cek status")])
    try:
        assert post(first, data).status_code == 200
        hanging.wait_for(1)
    finally:
        first.stop(forget_pending=False)  # like Rasa stopped (or killed) mid-turn: Meta has its 200
    assert fake.sent() == []

    rasa = Rasa()
    restarted = ChannelServer(WhatsAppInput(settings), rasa).start()
    try:
        assert post(restarted, data).status_code == 200  # a redelivery changes nothing
        fake.wait_for_sent(1, timeout=10)  # taken up when the first process's lease ran out
        fake.quiet_for(1.5)
    finally:
        restarted.stop()
    assert answers(fake, CITIZEN) == ["echo cek status"]
    assert rasa.texts() == ["cek status"]


def test_a_redelivery_racing_a_slow_first_attempt_is_not_answered_twice(fake, database_url):
    rasa = Rasa()

    async def slow(message):
        await asyncio.sleep(1.0)
        return [{"text": f"jawaban {message.text}"}]

    rasa.reply = slow
    server = ChannelServer(WhatsAppInput(settings_for(fake, database_url)), rasa).start()
    data = webhook([text(CITIZEN, "halo")])
    try:
        assert post(server, data).status_code == 200
        rasa.wait_for(1)
        assert post(server, data).status_code == 200  # while the first attempt still runs
        fake.wait_for_sent(1)
        time.sleep(2.5)  # past the lease: the answered message is not taken up again
        assert post(server, data).status_code == 200
        fake.quiet_for(1.0)
    finally:
        server.stop()
    assert answers(fake, CITIZEN) == ["jawaban halo"]
    assert rasa.texts() == ["halo"]


@pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")
def test_real_rasa_answers_a_message_of_the_outage_once_the_action_server_is_back(fake, database_url, tmp_path):
    """The real Rasa and action server (processes, as in tests/test_whatsapp_e2e.py): the retry
    loop runs inside Rasa's own server."""
    stack = Stack(database_url, rasa_port=free_port(), action_port=free_port(), log_dir=tmp_path / "log",
                  extra_env={"VAR_DIR": str(tmp_path), "OTP_OUTBOX": str(tmp_path / "outbox.jsonl"),
                             "OTP_HASH_KEY": "wa-outage-test-key", "LOG_LEVEL": "INFO",
                             **fake.env(APP_SECRET, VERIFY_TOKEN), **QUICK, "TURN_TIMEOUT_SECONDS": "10"})
    try:
        stack.start_actions()
        stack.start_rasa()
        url = f"http://127.0.0.1:{stack.rasa_port}/webhooks/whatsapp/webhook"
        citizen = f"62899{random.randrange(10**7, 10**8)}"
        stack.stop_actions()
        data = webhook([text(citizen, "cek status vaksin")])
        assert post_webhook(url, data, APP_SECRET).status_code == 200
        wait_until(lambda: texts.APOLOGY in answers(fake, citizen), 30, "no apology while the action server is down")
        stack.start_actions()
        wait_until(lambda: any("nomor HP" in body for body in answers(fake, citizen)), 30,
                   f"not answered once the action server was back: {answers(fake, citizen)}")
        assert post_webhook(url, data, APP_SECRET).status_code == 200  # Meta redelivering
        fake.quiet_for(1.5)
        bodies = answers(fake, citizen)
        assert bodies.count(texts.APOLOGY) == 1 and sum("nomor HP" in body for body in bodies) == 1, bodies
    finally:
        stack.stop()
