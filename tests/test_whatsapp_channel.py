"""The WhatsApp channel between a fake Meta and a stand-in for Rasa.

Handshake, signatures, deduplication, order, message types, button and list mapping, documents,
retries, apologies.

The channel is served by a real Sanic server (tests/whatsapp_support.py) so that its background
turns run as in Rasa; the Graph API is simulator.fake_graph.FakeGraph; the dedupe table is in the
test PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time

import pytest
import requests

from backend.db import Database
from whatsapp import texts
from whatsapp.channel import WhatsAppInput
from simulator.fake_graph import (FakeGraph, button_reply, post_webhook, sticker, status, text,
                                 webhook)
from whatsapp.settings import WhatsAppSettings
from whatsapp_support import (APP_SECRET, CITIZEN, OTHER, TOKEN, VERIFY_TOKEN, ChannelServer, FileServer,
                              Rasa, certificate_message, messages_of, new_wamid, payload)

PDF = b"%PDF-1.4\n% sertifikat uji\n" + b"0" * 2048 + b"\n%%EOF\n"


@pytest.fixture
def fake():
    with FakeGraph() as graph:
        yield graph


@pytest.fixture
def wa_settings(fake, database_url):
    return WhatsAppSettings.from_env({
        **fake.env(APP_SECRET, VERIFY_TOKEN), "DATABASE_URL": database_url,
        "WHATSAPP_RETRY_BASE_SECONDS": "0.01", "WHATSAPP_RETRY_MAX_SECONDS": "0.05",
        "TURN_TIMEOUT_SECONDS": "1.5"})


@pytest.fixture
def rasa():
    return Rasa()


@pytest.fixture
def server(wa_settings, rasa):
    running = ChannelServer(WhatsAppInput(wa_settings), rasa).start()
    yield running
    running.stop()


def post(server, data, secret=APP_SECRET, **kwargs):
    return post_webhook(server.url, data, secret, **kwargs)


def bodies(fake, to=CITIZEN):
    return [m["text"]["body"] for m in fake.sent(to) if m["type"] == "text"]


# --- handshake and authentication -----------------------------------------------------------

def test_verification_handshake(server):
    def get(**params):
        return requests.get(server.url, params=params, timeout=5)

    ok = get(**{"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["Content-Type"].startswith("text/plain")
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
                   {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
                   {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
                   {"hub.mode": "subscribe", "hub.challenge": "1"}, {}):
        refused = get(**params)
        assert refused.status_code == 403 and "1158201444" not in refused.text
    assert requests.get(server.url.rsplit("/", 1)[0] + "/", timeout=5).json() == {"status": "ok"}


def test_no_verify_token_configured_refuses_every_handshake(database_url, rasa):
    channel = WhatsAppInput(WhatsAppSettings.from_env({"DATABASE_URL": database_url}))
    running = ChannelServer(channel, rasa).start()
    try:
        reply = requests.get(running.url, params={"hub.mode": "subscribe", "hub.verify_token": "",
                                                  "hub.challenge": "1"}, timeout=5)
        assert reply.status_code == 403
        # Nor is any POST taken without an app secret to check it against.
        assert post(running, payload("text"), secret="").status_code == 503
    finally:
        running.stop()


def test_good_signature_reaches_rasa_bad_or_missing_does_not(server, rasa, fake):
    refused = [post(server, payload("text"), secret="not-the-app-secret"),
               post(server, payload("text"), signature="sha256=" + "0" * 64),
               post(server, payload("text"), secret=None),
               post(server, b'{"object": "whatsapp_business_account"', signature="sha256=bad")]
    assert [r.status_code for r in refused] == [403, 403, 401, 403]
    for garbage in (b"\xff\xfe not json", b"[" * 100_000):  # signed, but not JSON
        assert post(server, garbage).status_code == 400
    fake.quiet_for(0.3)
    assert rasa.received == [] and fake.requests == []

    accepted = post(server, payload("text"))
    assert accepted.status_code == 200
    [message] = rasa.wait_for(1)
    assert (message.text, message.sender_id, message.input_channel) == ("halo", CITIZEN, "whatsapp")
    assert fake.wait_for_sent(1)[0]["text"]["body"] == "echo halo"


def test_answers_meta_at_once_and_works_in_the_background(server, rasa, fake):
    async def slow(message):
        await asyncio.sleep(1.0)
        return [{"text": "selesai dipikirkan"}]

    rasa.reply = slow
    started = time.monotonic()
    assert post(server, payload("text")).status_code == 200
    assert time.monotonic() - started < 0.9
    assert bodies(fake) == []
    fake.wait_for_sent(1)
    assert bodies(fake) == ["selesai dipikirkan"]


# --- deduplication and order -----------------------------------------------------------------

def test_a_redelivered_message_is_processed_once_across_restarts(server, rasa, fake, wa_settings):
    data = payload("text")
    assert post(server, data).status_code == 200
    assert post(server, data).status_code == 200  # Meta retrying: still a 200, or it retries again
    rasa.wait_for(1)
    server.idle()

    # Another replica, or this one after a restart: the id is in PostgreSQL, not in memory.
    replica = ChannelServer(WhatsAppInput(wa_settings), rasa).start()
    try:
        assert post(replica, data).status_code == 200
        fresh = text(CITIZEN, "baru")
        assert post(replica, webhook(messages_of(data) + [fresh, fresh])).status_code == 200  # twice in a batch
        replica.idle()
    finally:
        replica.stop()
    fake.quiet_for(0.3)
    assert rasa.texts() == ["halo", "baru"]
    assert bodies(fake) == ["echo halo", "echo baru"]


def test_each_senders_messages_are_handled_in_order(server, rasa, fake):
    # Earlier messages take longer: handled side by side, their answers would come out of order.
    delays = {"siti 1": 0.5, "siti 3": 0.2, "siti 5": 0.1}

    async def uneven(message):
        await asyncio.sleep(delays.get(message.text, 0))
        return [{"text": f"jawaban {message.text}"}]

    rasa.reply = uneven
    now = int(time.time())
    # One batch with both citizens, then single deliveries arriving right after each other.
    batch = [text(CITIZEN, "siti 1", timestamp=now), text(OTHER, "luh 1", timestamp=now),
             text(CITIZEN, "siti 2", timestamp=now), text(OTHER, "luh 2", timestamp=now)]
    assert post(server, webhook(batch)).status_code == 200
    for n in (3, 4, 5):
        assert post(server, webhook([text(CITIZEN, f"siti {n}", timestamp=now + n)])).status_code == 200
    rasa.wait_for(7)
    server.idle()
    assert rasa.texts(CITIZEN) == [f"siti {n}" for n in range(1, 6)]
    assert rasa.texts(OTHER) == ["luh 1", "luh 2"]
    assert bodies(fake, CITIZEN) == [f"jawaban siti {n}" for n in range(1, 6)]
    # Citizens do not wait for each other: Luh's answers came before Siti's slow first turn ended.
    order = [m["to"] for m in fake.sent()]
    assert order.index(OTHER) < order.index(CITIZEN)


def test_order_holds_when_the_first_deliverys_dedupe_is_slower(server, rasa):
    """Two deliveries of one citizen in quick succession; the first one's database round trip
    is slow. The second must still wait for the first."""
    real = server.channel._seen_messages()

    class SlowFirst:
        calls = 0

        def claim(self, *args):
            SlowFirst.calls += 1
            if SlowFirst.calls == 1:
                time.sleep(0.4)
            return real.claim(*args)

        def __getattr__(self, name):  # answered, failed, take_due: the real ones
            return getattr(real, name)

    server.channel._seen = SlowFirst()
    first = threading.Thread(target=post, args=(server, webhook([text(CITIZEN, "pertama")])))
    first.start()
    time.sleep(0.1)
    assert post(server, webhook([text(CITIZEN, "kedua")])).status_code == 200
    first.join()
    rasa.wait_for(2)
    assert rasa.texts() == ["pertama", "kedua"]


def test_batched_entries_and_statuses(server, rasa, fake):
    assert post(server, payload("batched")).status_code == 200
    rasa.wait_for(3)
    server.idle()
    assert sorted(rasa.texts()) == ["dari orang lain", "kedua", "pertama"]
    assert rasa.texts(CITIZEN) == ["pertama", "kedua"]

    fake.clear()
    assert post(server, payload("statuses")).status_code == 200
    fake.quiet_for(0.3)
    assert fake.requests == [] and len(rasa.received) == 3


# --- message types ---------------------------------------------------------------------------

def test_taps_and_template_buttons_reach_rasa_as_their_payload(server, rasa):
    for name in ("button_reply", "list_reply", "template_button"):
        assert post(server, payload(name)).status_code == 200
    rasa.wait_for(3)
    assert rasa.texts() == ["/download_certificate", "tanggal lahir", "/check_vaccination_status"]
    tapped = rasa.received[0]
    assert tapped.metadata["wa_id"] == CITIZEN and tapped.metadata["whatsapp_type"] == "interactive"
    assert tapped.message_id == tapped.metadata["wamid"]


def test_unicode_and_emoji_both_ways(server, rasa, fake):
    assert post(server, payload("unicode")).status_code == 200
    [message] = rasa.wait_for(1)
    assert "🙏🏽" in message.text and "中文" in message.text
    assert "😭" in fake.wait_for_sent(1)[0]["text"]["body"]


def test_stickers_locations_and_reactions_get_a_polite_reply_without_rasa(server, rasa, fake):
    for name in ("sticker", "location", "reaction"):
        assert post(server, payload(name)).status_code == 200
    fake.wait_for_sent(3)
    assert bodies(fake) == [texts.UNSUPPORTED] * 3
    assert rasa.received == []


# --- what goes out ----------------------------------------------------------------------------

def test_buttons_become_reply_buttons_lists_or_numbered_text(server, rasa, fake):
    menu = [{"title": "Download Sertifikat", "payload": "/download_certificate"},
            {"title": "Status Vaksinasi", "payload": "/check_vaccination_status"},
            {"title": "Ubah Info Diri", "payload": "/change_personal_info"}]
    fields = [{"title": t, "payload": t.lower()} for t in ("Nama", "Nomor HP", "Email", "NIK", "Tanggal lahir")]
    many = [{"title": f"Fasilitas kesehatan {n}", "payload": f"/f{n}"} for n in range(1, 13)]

    async def choices(message):
        return {"menu": [{"text": "Halo! Silakan pilih menu:", "buttons": menu}],
                "ubah": [{"text": "Data apa yang ingin diubah?", "buttons": fields}],
                "banyak": [{"text": "Pilih fasilitas:", "buttons": many}]}[message.text]

    rasa.reply = choices
    for word in ("menu", "ubah", "banyak"):
        post(server, webhook([text(CITIZEN, word)]))
    sent = fake.wait_for_sent(3)
    assert [r.status for r in fake.requests] == [200, 200, 200]  # all within Meta's limits
    buttons, listed, numbered = sent
    assert [b["reply"]["title"] for b in buttons["interactive"]["action"]["buttons"]] == [
        "Download Sertifikat", "Status Vaksinasi", "Ubah Info Diri"]
    assert listed["interactive"]["type"] == "list"
    assert [r["id"] for r in listed["interactive"]["action"]["sections"][0]["rows"]] == [
        "nama", "nomor hp", "email", "nik", "tanggal lahir"]
    assert numbered["type"] == "text" and "12. Fasilitas kesehatan 12" in numbered["text"]["body"]

    # Tapping a button sends back its id: the same text Rasa gets when the payload is typed.
    rasa.reply = Rasa.echo
    post(server, webhook([button_reply(CITIZEN, "/check_vaccination_status", "Status Vaksinasi")]))
    assert rasa.wait_for(4)[-1].text == "/check_vaccination_status"


def test_long_text_is_split(server, rasa, fake):
    async def long(message):
        return [{"text": "Data vaksinasi. " * 600}]  # 9,600 characters

    rasa.reply = long
    post(server, payload("text"))
    sent = fake.wait_for_sent(3)
    assert [len(m["text"]["body"]) <= 4096 for m in sent] == [True] * 3
    fake.quiet_for(0.3)
    assert len(fake.sent()) == 3


@pytest.fixture
def files():
    running = FileServer(PDF)
    yield running
    running.stop()


@pytest.fixture
def served_certificates(wa_settings, rasa, files):
    """The channel with the action server's base (PUBLIC_BASE_URL) at the test's file server."""
    running = ChannelServer(WhatsAppInput(dataclasses.replace(wa_settings, public_base_url=files.base)),
                            rasa).start()
    yield running
    running.stop()


def test_a_certificate_becomes_an_uploaded_pdf_document(served_certificates, rasa, fake, files, caplog):
    async def certificate(message):
        return [certificate_message(files.link())]

    rasa.reply = certificate
    with caplog.at_level(logging.INFO):
        post(served_certificates, payload("text"))
        [document] = fake.wait_for_sent(1)
    upload = next(r for r in fake.requests if r.path.endswith("/media"))
    assert upload.path == f"/v23.0/{fake.phone_number_id}/media"
    assert upload.headers["Authorization"] == f"Bearer {fake.access_token}"
    assert upload.form == {"messaging_product": "whatsapp", "type": "application/pdf"}
    assert upload.files["file"] == ("sertifikat-vaksin-dosis-2.pdf", "application/pdf", PDF)
    assert document["type"] == "document"
    assert document["document"] == {
        "id": upload.answer["id"], "filename": "sertifikat-vaksin-dosis-2.pdf",
        "caption": "Sertifikat Dosis 2 atas nama Siti Rahmawati (NIK 3273********0003)"}
    assert fake.media[upload.answer["id"]].content == PDF
    assert files.paths == [f"/certificates/{TOKEN}.pdf"]
    assert TOKEN not in caplog.text


def test_when_the_document_cannot_be_made_the_link_is_sent(served_certificates, rasa, fake, files, caplog):
    link = files.link()

    async def certificate(message):
        return [certificate_message(link)]

    rasa.reply = certificate
    fake.fail_next(400, 131053, "Media upload error", path_contains="/media")
    with caplog.at_level(logging.INFO):
        post(served_certificates, payload("text"))
        [fallback] = fake.wait_for_sent(1)
    assert fallback["type"] == "text" and link in fallback["text"]["body"]
    assert "131053" in caplog.text and "sent the link instead" in caplog.text
    assert TOKEN not in caplog.text


def test_429_5xx_and_metas_busy_codes_are_retried_other_4xx_are_not_and_logged(server, rasa, fake, caplog):
    fake.fail_next(429, 130429, "Rate limit hit", times=2)
    fake.fail_next(503, 131000, "Something went wrong")
    with caplog.at_level(logging.INFO):
        post(server, payload("text"))
        fake.wait_for_sent(1)
    assert [r.status for r in fake.requests] == [429, 429, 503, 200]

    # A rate limit answered with 400: retried for its code, as Meta asks.
    fake.clear()
    fake.fail_next(400, 131056, "(Business Account, Consumer Account) pair rate limit hit")
    with caplog.at_level(logging.INFO):
        post(server, payload("text"))
        fake.wait_for_sent(1)
    assert [r.status for r in fake.requests] == [400, 200]

    fake.clear()
    fake.fail_next(400, 131026, "Message undeliverable")
    with caplog.at_level(logging.INFO):
        post(server, payload("text"))
        server.idle()
        fake.quiet_for(0.2)
    assert [r.status for r in fake.requests] == [400]
    assert "131026" in caplog.text and "Message undeliverable" in caplog.text

    fake.clear()
    fake.fail_next(500, 131000, "Something went wrong", times=10)
    with caplog.at_level(logging.INFO):
        post(server, payload("text"))
        server.idle()
    assert len(fake.requests) == 4  # WHATSAPP_RETRY_ATTEMPTS, then given up and logged
    assert "failed after retries" in caplog.text
    assert CITIZEN not in caplog.text and "81234567002" not in caplog.text


# --- failures --------------------------------------------------------------------------------

class StoreDown(BaseException):
    """Like rasa_server.tracker_store.TrackerStoreUnavailable: a BaseException on purpose."""


def test_every_failed_or_silent_turn_gets_an_apology(server, rasa, fake, caplog):
    async def raises(message):
        raise RuntimeError(f"boom for {message.sender_id}")

    async def store_down(message):
        raise StoreDown()

    async def action_server_down(message):
        # What Rasa's processor does when a custom action cannot be reached: log and carry on.
        logging.getLogger("rasa.core.processor").error("Encountered an exception while running action")
        return [{"text": "Untuk menjaga keamanan data, saya perlu memverifikasi Anda."}]

    async def silent(message):
        return []

    async def too_slow(message):
        await asyncio.sleep(5)
        return [{"text": "terlambat"}]

    with caplog.at_level(logging.INFO):
        for handler in (raises, store_down, action_server_down, silent, too_slow):
            rasa.reply = handler
            post(server, payload("text"))
            server.idle()
    assert bodies(fake) == [texts.APOLOGY, texts.APOLOGY,
                            "Untuk menjaga keamanan data, saya perlu memverifikasi Anda.", texts.APOLOGY,
                            texts.APOLOGY, texts.APOLOGY]
    assert caplog.text.count("apologised") == 5
    assert "0812****7002" in caplog.text and "81234567002" not in caplog.text


def test_database_down_refuses_the_delivery_so_meta_retries(wa_settings, rasa, fake):
    unreachable = Database("postgresql://nobody@127.0.0.1:9/nothing", max_connections=1)
    running = ChannelServer(WhatsAppInput(wa_settings, database=unreachable), rasa).start()
    try:
        assert post(running, payload("text")).status_code == 503
        assert post(running, payload("statuses")).status_code == 200  # nothing to deduplicate
    finally:
        running.stop()
    fake.quiet_for(0.2)
    assert rasa.received == [] and fake.requests == []


def test_malformed_parts_of_a_batch_do_not_stop_the_rest(server, rasa, fake):
    data = webhook([text(CITIZEN, "bisa dibaca")])
    value = data["entry"][0]["changes"][0]["value"]
    value["messages"] = [{"from": None}, "x", 7, value["messages"][0], {"type": "text"}]
    data["entry"].insert(0, {"changes": "not a list"})
    data["entry"].append(None)
    assert post(server, data).status_code == 200
    assert [m.text for m in rasa.wait_for(1)] == ["bisa dibaca"]
    assert post(server, {"object": "whatsapp_business_account", "entry": "x"}).status_code == 200
    assert post(server, [1, 2]).status_code == 200
    server.idle()
    assert len(rasa.received) == 1


def test_a_sticker_and_a_status_in_one_delivery(server, rasa, fake):
    data = webhook([sticker(CITIZEN)], [status(CITIZEN, "wamid.X", "failed", error=(131047, "Re-engagement"))])
    assert post(server, data).status_code == 200
    assert fake.wait_for_sent(1)[0]["text"]["body"] == texts.UNSUPPORTED
    assert rasa.received == []


def test_seen_ids_are_kept_at_least_seven_days(database_url):
    from whatsapp.dedupe import SeenMessages

    db = Database(database_url, max_connections=1)
    old, recent = new_wamid(), new_wamid()
    db.run(lambda cur: cur.execute(
        "INSERT INTO whatsapp_seen_messages (wamid, received_at) VALUES"
        " (%s, now() - interval '8 days'), (%s, now() - interval '6 days 23 hours')", (old, recent)))
    seen = SeenMessages(db, keep_days=7)
    fresh = new_wamid()
    assert seen.claim([recent, fresh, fresh]) == {fresh}  # and the purge ran
    assert seen.claim([old]) == {old}  # forgotten after 7 days: taken in again
    db.close()
    with pytest.raises(ValueError, match="WHATSAPP_DEDUPE_DAYS"):
        WhatsAppSettings.from_env({"WHATSAPP_DEDUPE_DAYS": "3"})
