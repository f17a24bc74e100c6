"""End to end over WhatsApp: the real Rasa and action server, the channel pointed at the fake.

Rasa (trained model) and the action server run as processes, started once for this module; a
citizen's signed webhooks go in, the Graph API calls come out.
"""

from __future__ import annotations

import io
import random
import re

import pytest
from pypdf import PdfReader

from tools.stack import MODEL, Stack
from whatsapp import texts
from simulator.fake_graph import FakeGraph
from conftest import start_stack
from whatsapp_support import APP_SECRET, CITIZEN, VERIFY_TOKEN, free_port

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")


@pytest.fixture(scope="module")
def fake():
    with FakeGraph() as graph:
        yield graph


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory, fake):
    tmp = tmp_path_factory.mktemp("wa-stack")
    running = Stack(database_url, rasa_port=free_port(), action_port=free_port(), log_dir=tmp / "log",
                    extra_env={"VAR_DIR": str(tmp), "OTP_OUTBOX": str(tmp / "outbox.jsonl"),
                               "OTP_HASH_KEY": "wa-e2e-test-key", "LOG_LEVEL": "INFO",
                               **fake.env(APP_SECRET, VERIFY_TOKEN),
                               "WHATSAPP_RETRY_BASE_SECONDS": "0.05"})
    start_stack(running, tmp / "log")
    running.outbox = tmp / "outbox.jsonl"
    fake.webhook_url = f"http://127.0.0.1:{running.rasa_port}/webhooks/whatsapp/webhook"
    fake.app_secret = APP_SECRET
    yield running
    running.stop()


def bodies(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        if m["type"] == "text":
            parts.append(m["text"]["body"])
        elif m["type"] == "interactive":
            parts.append(m["interactive"]["body"]["text"])
    return "\n".join(parts)


def test_certificate_download_over_whatsapp(stack, fake, backend, database_url):
    from conftest import Outbox

    phone = fake.phone(CITIZEN)  # simulator.fake_graph.Phone, as the simulator's page uses it
    [greeting] = phone.say("halo")
    assert greeting["type"] == "interactive" and greeting["interactive"]["type"] == "button"
    buttons = [b["reply"] for b in greeting["interactive"]["action"]["buttons"]]
    assert [b["title"] for b in buttons] == ["Download Sertifikat", "Status Vaksinasi", "Ubah Info Diri"]

    assert "nomor HP" in bodies(phone.tap("Download Sertifikat"))
    reply = bodies(phone.say("0812-3456-7002"))
    assert "0812****7002" in reply and "kode OTP" in reply
    code = Outbox(stack.outbox, db=backend.db).last_code("+6281234567002")

    answer = phone.say(code)
    assert "Verifikasi berhasil" in bodies(answer) and "Siti Rahmawati" in bodies(answer)
    choice = answer[-1]
    assert choice["type"] == "interactive" and "Sertifikat mana" in choice["interactive"]["body"]["text"]
    doses = [b["reply"] for b in choice["interactive"]["action"]["buttons"]]
    assert [d["title"] for d in doses] == ["Dosis 1", "Dosis 2"]

    tap = phone.tap_message("Dosis 2")
    [document] = phone.send(tap)
    assert document["type"] == "document"
    assert document["document"]["filename"] == "sertifikat-vaksin-dosis-2.pdf"
    caption = document["document"]["caption"]
    assert "Siti Rahmawati" in caption and "3273********0003" in caption and "http" not in caption
    pdf = fake.media[document["document"]["id"]]
    assert pdf.mime_type == "application/pdf" and pdf.filename == "sertifikat-vaksin-dosis-2.pdf"
    page = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "Siti Rahmawati" in page and "AstraZeneca" in page and "3273********0003" in page
    assert all(r.status == 200 for r in fake.requests)

    # Meta redelivering the tap changes nothing.
    before = len(fake.requests)
    assert fake.deliver(tap).status_code == 200
    fake.quiet_for(1.0)
    assert len(fake.requests) == before

    # Nothing personal in either process's log: number, NIK, code, download token (the stored
    # events keep no token, so any token-shaped path is looked for).
    logs = "".join(p.read_text() for p in stack.log_dir.glob("*.log"))
    for secret in ("81234567002", "3273025708850003", code):
        assert secret not in logs
    assert not re.search(r"/certificates/[A-Za-z0-9_\-]{20,}", logs)


def test_action_server_down_gets_an_apology_then_the_conversation_goes_on(stack, fake, backend):
    phone = fake.phone(f"62899{random.randrange(10**7, 10**8)}")
    stack.stop_actions()
    try:
        assert bodies(phone.say("cek status vaksin")).endswith(texts.APOLOGY)
    finally:
        stack.start_actions()
    assert "nomor HP" in bodies(phone.say("cek status vaksin"))
