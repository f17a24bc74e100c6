"""Certificate links: the WhatsApp channel fetches only certificates named as data, from the
action server's own base, without following redirects; stored conversations keep no usable
download token.

The certificate turns are real: the action (ActionSendCertificate) on the test backend, its
responses made into bot messages by Rasa's own code (RemoteAction._utter_responses with the
domain's templates), the conversation saved by our tracker store on the test PostgreSQL. The
Graph API is simulator.fake_graph.FakeGraph; the other servers are aiohttp apps on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest
from aiohttp import web
from rasa.core.actions.action import RemoteAction
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from actions import backend as action_backend
from actions.actions import ActionSendCertificate
from actions.forms import ValidateCertificateForm
from conftest import make_store, serve_on_loopback
from rasa_server import jsonio
from test_actions import run, tracker, verify
from whatsapp.channel import WhatsAppInput
from simulator.fake_graph import FakeGraph, post_webhook
from whatsapp.settings import WhatsAppSettings
from whatsapp_support import APP_SECRET, CITIZEN, VERIFY_TOKEN, ChannelServer, Rasa, payload

DOMAIN = Domain.load(str(Path(__file__).resolve().parent.parent / "domain.yml"))
TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_\-]{20,}")


# --- servers on loopback --------------------------------------------------------------------

class Listener:
    """An aiohttp server that counts every request: nothing should ever reach it."""

    def __init__(self):
        self.requests: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.Response(body=b"%PDF-1.4 not ours", content_type="application/pdf")


class ActionServerCertificates:
    """The action server's /certificates/<token>.pdf on the test backend (what actions/server.py
    serves: the backend's lookup of the token and its PDF), or a redirect to `redirect_to`."""

    def __init__(self, backend, redirect_to: str | None = None):
        self.backend, self.redirect_to = backend, redirect_to
        self.requests: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/certificates/{name}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if self.redirect_to:
            raise web.HTTPFound(self.redirect_to)
        data = self.backend.repo.certificate_by_token(request.match_info["name"][:-4])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=self.backend.certificates.get_pdf(data), content_type="application/pdf")


def serve(server: ChannelServer, app: web.Application) -> str:
    """`app` on loopback, on the channel server's event loop (stopped with it); its base URL."""
    runner, port = asyncio.run_coroutine_threadsafe(serve_on_loopback(app), server.loop).result(10)
    server.runners.append(runner)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def actions_on_backend(backend):
    action_backend.set_backend(backend)
    yield
    action_backend.set_backend(None)


@pytest.fixture
def fake():
    with FakeGraph() as graph:
        yield graph


@pytest.fixture
def channel(fake, database_url):
    """The WhatsApp channel (its settings changed per test), a stand-in for Rasa, the server."""
    rasa = Rasa()
    settings = WhatsAppSettings.from_env({
        **fake.env(APP_SECRET, VERIFY_TOKEN), "DATABASE_URL": database_url,
        "WHATSAPP_RETRY_BASE_SECONDS": "0.01", "WHATSAPP_RETRY_MAX_SECONDS": "0.05"})
    whatsapp = WhatsAppInput(settings)
    server = ChannelServer(whatsapp, rasa).start()
    server.rasa, server.runners = rasa, []
    yield server
    for runner in server.runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), server.loop).result(10)
    server.stop()


def configure(server: ChannelServer, **changes) -> None:
    server.channel.settings = dataclasses.replace(server.channel.settings, **changes)
    server.channel.graph.settings = server.channel.settings


# --- Rasa's bot messages, made as Rasa makes them -------------------------------------------

def bot_messages(responses: list[dict], slots: dict | None = None) -> list[BotUttered]:
    """The action server's responses as Rasa turns them into bot messages (the domain's template
    filled with the response's variables); what a channel gets is each one's .message()."""
    state = DialogueStateTracker("c", DOMAIN.slots)
    for name, value in (slots or {}).items():
        state.slots[name].value = value
    return asyncio.run(RemoteAction._utter_responses(
        [dict(r) for r in responses], CollectingOutputChannel(),
        TemplatedNaturalLanguageGenerator(DOMAIN.responses), state))


def certificate_turn(outbox, sender: str = "c1") -> list[BotUttered]:
    """Budi verifies, chooses himself and the booster; the action's reply as Rasa's bot messages."""
    verify(sender, "081234567001", outbox)
    run(ValidateCertificateForm(), tracker(sender, "1", requested="person"))
    _, messages = run(ActionSendCertificate(), tracker(sender, form=None, slots={"dose": "3"}))
    assert [m["response"] for m in messages] == ["utter_certificate_ready"]
    return bot_messages(messages, {"dose": "3"})


# --- 2. the WhatsApp channel fetches nothing named in text ----------------------------------

def test_links_in_a_citizens_report_are_never_fetched(channel, fake):
    listener = Listener()
    base = serve(channel, listener.app)
    # Even the action server's own base: a link in text is text, whoever wrote it.
    configure(channel, public_base_url=base, internal_base_url=base)
    description = (f"sertifikat saya tidak muncul, lihat {base}/admin?x=1 dan "
                   f"{base}/certificates/abc.pdf juga {base}/certificates/{'A' * 43}.pdf")
    [confirm] = bot_messages([{"response": "utter_confirm_report", "label": "Sertifikat tidak muncul",
                               "description": description}])

    async def echo_report(message):
        return [confirm.message()]

    channel.rasa.reply = echo_report
    post_webhook(channel.url, payload("text"), APP_SECRET)
    [sent] = fake.wait_for_sent(1)
    channel.idle()
    assert listener.requests == []
    assert not any(r.path.endswith("/media") for r in fake.requests)
    # The citizen gets the confirmation as it is: the question with its yes/no buttons.
    assert sent["type"] == "interactive" and f"{base}/certificates/abc.pdf" in sent["interactive"]["body"]["text"]


def test_a_real_certificate_arrives_as_a_document(channel, fake, backend, outbox, actions_on_backend):
    [bot] = certificate_turn(outbox)
    certificates = ActionServerCertificates(backend)
    configure(channel, internal_base_url=serve(channel, certificates.app))
    message = bot.message()

    async def certificate(_):
        return [message]

    channel.rasa.reply = certificate
    post_webhook(channel.url, payload("text"), APP_SECRET)
    [document] = fake.wait_for_sent(1)
    token = message["custom"]["certificate"]["token"]
    # Fetched from the action server's internal base, built from the token; not the public link.
    assert message["custom"]["certificate"]["link"].startswith("http://localhost:5055/certificates/")
    assert certificates.requests == [f"/certificates/{token}.pdf"]
    assert document["type"] == "document"
    assert document["document"]["filename"] == "sertifikat-vaksin-dosis-3.pdf"
    assert document["document"]["caption"] == "Sertifikat Booster (Dosis 3) atas nama Budi Santoso (NIK 3174********0001)"
    assert fake.media[document["document"]["id"]].content.startswith(b"%PDF")


def test_a_redirect_from_the_action_server_is_not_followed(channel, fake, backend, outbox):
    listener = Listener()
    elsewhere = serve(channel, listener.app)
    redirecting = ActionServerCertificates(backend, redirect_to=f"{elsewhere}/latest/meta-data/")
    base = serve(channel, redirecting.app)
    configure(channel, public_base_url=base)
    token = "Zk3v9Qp2LmN8xY4rT6wB_-aQ7s0dF1gH2jK3lM4nP5q"
    [bot] = bot_messages([{"response": "utter_certificate_ready", "dose_label": "Dosis 2", "name": "Siti Rahmawati",
                           "masked_nik": "3273********0003", "link": f"{base}/certificates/{token}.pdf",
                           "token": token, "dose_number": 2, "minutes": 15}])

    async def certificate(_):
        return [bot.message()]

    channel.rasa.reply = certificate
    post_webhook(channel.url, payload("text"), APP_SECRET)
    [fallback] = fake.wait_for_sent(1)
    channel.idle()
    assert redirecting.requests == [f"/certificates/{token}.pdf"]
    assert listener.requests == []
    # A 3xx is a failure: the citizen gets the text with the link instead of a document.
    assert fallback["type"] == "text" and f"{base}/certificates/{token}.pdf" in fallback["text"]["body"]
    assert fallback["to"] == CITIZEN


# --- 9. stored conversations keep no usable download token ----------------------------------

def test_stored_events_keep_no_usable_certificate_token(backend, outbox, database_url, action_client):
    bots = certificate_turn(outbox, "conv-cert")  # action_client put the actions on the test backend
    state = DialogueStateTracker("conv-cert", DOMAIN.slots)
    state.update(ActionExecuted("action_listen"))
    state.update(UserUttered("booster", {"name": "inform", "confidence": 1.0}))
    state.update(ActionExecuted("action_send_certificate"))
    # What the channel got in this turn, before the conversation was saved (Rasa's order).
    shown = [bot.message() for bot in bots]
    for bot in bots:
        state.update(bot)
    store = make_store(database_url)
    try:
        asyncio.run(store.save(state))
        rows = backend.db.run(lambda cur: (cur.execute(
            "SELECT data FROM events WHERE sender_id = %s ORDER BY id", ("conv-cert",)), cur.fetchall())[1])
        read_back = asyncio.run(store.retrieve("conv-cert"))
    finally:
        store.dispose()

    token = shown[0]["custom"]["certificate"]["token"]
    link = shown[0]["custom"]["certificate"]["link"]
    assert link in shown[0]["text"] and link.endswith(f"/certificates/{token}.pdf")
    # The citizen's link works.
    _, pdf = action_client.get(f"/certificates/{token}.pdf")
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF")

    stored = "\n".join(row["data"] for row in rows)
    assert "utter_certificate_ready" in stored and "Budi Santoso" in stored
    assert token not in stored
    # Nothing token-shaped in the stored conversation opens a certificate.
    candidates = set(TOKEN_SHAPED.findall(stored))
    for candidate in candidates:
        _, reply = action_client.get(f"/certificates/{candidate}.pdf")
        assert reply.status == 404, candidate
    # The same for what is kept in memory and sent on to the action server (speed patches).
    for event in list(state.events) + list(read_back.events):
        assert token not in jsonio.dumps(event.as_dict())
        assert token not in (jsonio.stored_json(event) or "")
    assert any(jsonio.stored_json(e) for e in state.events if isinstance(e, BotUttered))


def test_rest_reply_carries_the_link_in_text_and_the_certificate_as_data(backend, outbox, action_client):
    from sanic import Sanic

    from rest.channel import RestInput

    [bot] = certificate_turn(outbox, "rest-cert")  # action_client put the actions on the test backend

    async def on_new_message(message):
        # As Rasa's processor sends a bot message to the channel.
        await message.output_channel.send_response(message.sender_id, bot.message())

    Sanic.test_mode = True
    app = Sanic("rest_certificate_test")
    app.blueprint(RestInput().blueprint(on_new_message), url_prefix="/webhooks/rest")
    _, reply = app.test_client.post("/webhooks/rest/webhook", json={"sender": "rest-cert", "message": "booster"})
    # Rasa's output channels send a message's text and its custom part as two entries of the reply.
    [text, data] = reply.json
    part = data["custom"]["certificate"]
    assert part["link"] in text["text"] and part["filename"] == "sertifikat-vaksin-dosis-3.pdf"
    assert part["caption"] == "Sertifikat Booster (Dosis 3) atas nama Budi Santoso (NIK 3174********0001)"
    _, pdf = action_client.get(part["link"].replace("http://localhost:5055", ""))
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF")
    assert part["link"].endswith(f"/certificates/{part['token']}.pdf")
