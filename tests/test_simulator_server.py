"""The simulator's server without a browser: the page's API, its event stream and outbox, the reset.

The real channel (on its own Sanic server, tests/whatsapp_support.py) talks to the simulator as
to Meta; Rasa is the recording stand-in. What the page does with all this is the browser
test's business (test_simulator_browser.py).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from simulator.run import outbox_path
from simulator.server import RasaConversations, Simulator, demo_numbers, display_number, outbox_messages
from tools.stack import ROOT
from whatsapp.channel import WhatsAppInput
from whatsapp.settings import WhatsAppSettings
from whatsapp_support import APP_SECRET, VERIFY_TOKEN, ChannelServer, FileServer, Rasa, certificate_message

BUDI = "6281234567001"
PDF = b"%PDF-1.4\n% sertifikat uji\n" + b"0" * 1024 + b"\n%%EOF\n"


class Events:
    """The page's EventSource, read with requests: (event, data) pairs in order."""

    def __init__(self, url: str):
        self.reply = requests.get(url, stream=True, timeout=10)
        assert self.reply.headers["Content-Type"].startswith("text/event-stream")
        self.lines = self.reply.iter_lines(decode_unicode=True)

    def next(self, wanted: str | None = None, timeout: float = 10.0) -> tuple[str, dict]:
        deadline = time.monotonic() + timeout
        event, data = None, []
        for line in self.lines:
            if time.monotonic() > deadline:
                break
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
            elif line == "" and event:
                if wanted is None or event == wanted:
                    return event, json.loads("\n".join(data))
                event, data = None, []
        raise TimeoutError(f"no {wanted or 'event'} within {timeout} s")

    def close(self) -> None:
        self.reply.close()


@pytest.fixture
def sim(tmp_path):
    simulator = Simulator(outbox=tmp_path / "outbox.jsonl", app_secret=APP_SECRET).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def files():
    """The action server's certificate links (the channel's PUBLIC_BASE_URL)."""
    running = FileServer(PDF, filename="sertifikat-vaksin-dosis-3.pdf")
    yield running
    running.stop()


@pytest.fixture
def rasa(files):
    stand_in = Rasa()

    async def reply(message):
        if message.text == "menu":
            return [{"text": "Pilih menu:", "buttons": [{"title": t, "payload": f"/{p}"} for t, p in (
                ("Download Sertifikat", "download_certificate"), ("Status Vaksinasi", "check_vaccination_status"),
                ("Ubah Info Diri", "change_personal_info"))]}]
        if message.text == "ubah":
            return [{"text": "Data apa yang ingin diubah?",
                     "buttons": [{"title": t, "payload": t.lower()} for t in ("Nama", "Nomor HP", "Email", "NIK", "Tanggal lahir")]}]
        if message.text == "sertifikat":
            return [certificate_message(files.link(), dose=3)]
        return [{"text": f"echo {message.text}"}]

    stand_in.reply = reply
    return stand_in


@pytest.fixture
def channel(sim, rasa, files, database_url):
    settings = WhatsAppSettings.from_env({**sim.env(APP_SECRET, VERIFY_TOKEN), "DATABASE_URL": database_url,
                                          "WHATSAPP_RETRY_BASE_SECONDS": "0.01", "PUBLIC_BASE_URL": files.base})
    server = ChannelServer(WhatsAppInput(settings), rasa).start()
    sim.webhook_url = server.url
    yield server
    server.stop()


def api(sim, path: str) -> str:
    return f"{sim.base_url}/sim/api{path}"


def send(sim, wa_id: str, body: dict) -> requests.Response:
    return requests.post(api(sim, f"/chats/{wa_id}/messages"), json=body, timeout=15)


def wait_for_out(sim, wa_id: str, count: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = [e for e in sim.chat(wa_id) if e.direction == "out"]
        if len(out) >= count:
            return out
        time.sleep(0.05)
    raise TimeoutError(f"{count} replies did not arrive: {sim.chat(wa_id)}")


def test_the_page_and_its_files_are_served_beside_the_graph_api(sim):
    page = requests.get(sim.base_url + "/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'lang="id"' in page.text and "/sim/static/app.js" in page.text and "Kotak keluar pengembangan" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        reply = requests.get(f"{sim.base_url}/sim/static/{name}", timeout=5)
        assert reply.status_code == 200 and kind in reply.headers["Content-Type"]
    # The Graph API's own routes still answer as Meta (a wrong token is refused).
    refused = requests.post(f"{sim.base_url}/v23.0/{sim.phone_number_id}/messages", json={}, timeout=5)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == 190
    config = requests.get(api(sim, "/config"), timeout=5).json()
    assert config["business"]["name"] == "Asisten Sertifikat Vaksin" and config["rasa_reset"] is False
    budi = next(d for d in config["demo"] if d["wa_id"] == BUDI)
    assert budi["names"][:2] == ["Budi Santoso", "Rina Santoso"] and budi["display"] == "0812-3456-7001"


def test_typed_text_goes_signed_to_the_webhook_and_replies_carry_their_latency(sim, channel, rasa):
    events = Events(api(sim, f"/chats/{BUDI}/events"))
    try:
        assert events.next("snapshot")[1] == {"entries": []}
        assert send(sim, BUDI, {"text": "  halo  "}).json() == {"status": 200}
        [message] = rasa.wait_for(1)
        assert (message.text, message.sender_id) == ("halo", BUDI)
        assert message.metadata["wa_id"] == BUDI

        _, sent = events.next("entry")
        assert sent["direction"] == "in" and sent["message"]["text"]["body"] == "halo"
        [reply] = wait_for_out(sim, BUDI, 1)
        seen = [events.next("entry")[1] for _ in range(2)]  # the webhook's 200 and the reply, in either order
        assert {e["seq"] for e in seen} == {sent["seq"], reply.seq}
        entry = next(e for e in seen if e["direction"] == "out")
        assert entry["message"]["text"]["body"] == "echo halo"
        assert 0 <= entry["latency"] < 10
    finally:
        events.close()
    [first, second] = sim.chat(BUDI)
    assert first.status == 200 and second.latency == entry["latency"]
    # A page opened later gets the whole chat at once.
    later = Events(api(sim, f"/chats/{BUDI}/events"))
    try:
        assert [e["direction"] for e in later.next("snapshot")[1]["entries"]] == ["in", "out"]
    finally:
        later.close()


def test_buttons_and_list_rows_are_tapped_as_whatsapp_reports_them(sim, channel, rasa):
    send(sim, BUDI, {"text": "menu"})
    [menu] = wait_for_out(sim, BUDI, 1)
    assert menu.message["interactive"]["type"] == "button"
    reply = {"type": "button_reply", "id": "/change_personal_info", "title": "Ubah Info Diri", "context": menu.wamid}
    assert send(sim, BUDI, {"reply": reply}).status_code == 200
    assert rasa.wait_for(2)[1].text == "/change_personal_info"
    tapped = [e for e in sim.chat(BUDI) if e.direction == "in"][-1].message
    assert tapped["type"] == "interactive" and tapped["context"]["id"] == menu.wamid
    assert tapped["interactive"]["button_reply"] == {"id": "/change_personal_info", "title": "Ubah Info Diri"}

    send(sim, BUDI, {"text": "ubah"})
    choice = wait_for_out(sim, BUDI, 3)[-1]
    assert choice.message["interactive"]["type"] == "list"
    rows = choice.message["interactive"]["action"]["sections"][0]["rows"]
    assert [r["title"] for r in rows] == ["Nama", "Nomor HP", "Email", "NIK", "Tanggal lahir"]
    row = {"type": "list_reply", "id": rows[2]["id"], "title": "Email", "context": choice.wamid}
    assert send(sim, BUDI, {"reply": row}).status_code == 200
    assert rasa.wait_for(4)[3].text == "email"


def test_a_certificate_arrives_as_a_document_the_page_can_open(sim, channel, rasa):
    send(sim, BUDI, {"text": "sertifikat"})
    [document] = wait_for_out(sim, BUDI, 1)
    assert document.message["type"] == "document"
    entry = sim.entry_json(document)
    assert entry["media"]["url"].startswith("/sim/media/") and entry["media"]["size"] == len(PDF)
    pdf = requests.get(sim.base_url + entry["media"]["url"], timeout=5)
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf" and pdf.content == PDF
    assert 'filename="sertifikat-vaksin-dosis-3.pdf"' in pdf.headers["Content-Disposition"]
    assert requests.get(sim.base_url + "/sim/media/999", timeout=5).status_code == 404


def test_the_outbox_shows_only_this_numbers_messages_and_is_pushed_when_it_grows(sim):
    def write(to, text):
        with open(sim.outbox, "a", encoding="utf-8") as out:
            out.write(json.dumps({"to": to, "text": text, "sent_at": "2026-11-29T08:00:00+00:00"}) + "\n")

    write("+6281234567002", "Kode verifikasi Asisten Sertifikat Vaksin: 111111.")
    events = Events(api(sim, f"/chats/{BUDI}/events"))
    try:
        events.next("snapshot")
        assert events.next("outbox")[1]["messages"] == []
        write("+6281234567001", "Kode verifikasi Asisten Sertifikat Vaksin: 482913. Berlaku 5 menit.")
        with open(sim.outbox, "a") as out:
            out.write("{half a line\n")
        _, pushed = events.next("outbox")
    finally:
        events.close()
    assert pushed["path"] == str(sim.outbox)
    assert [(m["to"], m["code"]) for m in pushed["messages"]] == [("+6281234567001", "482913")]
    assert requests.get(api(sim, f"/chats/{BUDI}/outbox"), timeout=5).json()["messages"] == pushed["messages"]
    assert outbox_messages(sim.outbox.parent / "missing.jsonl", BUDI) == []


def test_what_the_page_cannot_send_is_refused(sim, channel):
    assert send(sim, BUDI, {"text": "   "}).status_code == 400
    assert send(sim, BUDI, {"reply": {"type": "nfm_reply", "id": "x", "title": "x"}}).status_code == 400
    assert send(sim, "not-a-number", {"text": "halo"}).status_code == 404
    sim.app_secret = "not-the-app-secret"  # Meta signing with another app's secret: the channel refuses
    refused = send(sim, BUDI, {"text": "halo"})
    assert refused.status_code == 502 and "403" in refused.json()["error"]
    assert sim.chat(BUDI)[-1].status == 403


class FakeRasaApi:
    """Rasa's HTTP API as far as the reset uses it; records the calls."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append((self.path, body))
                ok = "token=secret-token" in self.path
                self.send_response(200 if ok else 401)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def test_a_new_conversation_clears_the_chat_and_restarts_rasa(sim, channel, rasa):
    send(sim, BUDI, {"text": "halo"})
    wait_for_out(sim, BUDI, 1)
    # Without Rasa's API only the phone forgets.
    assert requests.post(api(sim, f"/chats/{BUDI}/reset"), timeout=5).json() == {"rasa": "untouched", "problem": None}
    [reset] = sim.chat(BUDI)
    assert reset.direction == "reset"

    rasa_api = FakeRasaApi()
    try:
        sim.rasa = RasaConversations(rasa_api.url, "secret-token")
        assert requests.post(api(sim, f"/chats/{BUDI}/reset"), timeout=5).json()["rasa"] == "restarted"
        assert [(path.split("?")[0], body) for path, body in rasa_api.calls] == [
            (f"/conversations/{BUDI}/execute", {"name": "action_end_session"}),
            (f"/conversations/{BUDI}/tracker/events", {"event": "restart"})]
        sim.rasa = RasaConversations(rasa_api.url, "wrong-token")
        answer = requests.post(api(sim, f"/chats/{BUDI}/reset"), timeout=5).json()
        assert answer["rasa"] == "untouched" and "401" in answer["problem"]
    finally:
        rasa_api.server.shutdown()


def test_numbers_and_paths():
    assert display_number("6281234567001") == "0812-3456-7001"
    assert display_number("447700900123") == "+447700900123"
    assert {d["wa_id"] for d in demo_numbers()} >= {f"62812345670{i:02d}" for i in range(1, 6)}
    assert outbox_path({}) == ROOT / "var" / "outbox.jsonl"
    assert str(outbox_path({"VAR_DIR": "/tmp/x"})) == "/tmp/x/outbox.jsonl"
    assert outbox_path({"OTP_OUTBOX": "var/o.jsonl"}) == ROOT / "var" / "o.jsonl"
