"""OTP_SENDER=whatsapp: the code goes out as Meta's authentication template, through the fake.

Sent to the account's registered number with a copy-code button; it opens a session as usual.
"""

from __future__ import annotations

import logging

import pytest

from backend import Settings
from conftest import assembled
from simulator.fake_graph import FakeGraph
from whatsapp.otp import WhatsAppOtpSender

BUDI = "+6281234567001"


@pytest.fixture
def fake():
    with FakeGraph() as graph:
        yield graph


@pytest.fixture
def whatsapp_backend(fake, database_url, settings_env, clock, backend):  # `backend` resets the data
    env = {**settings_env, "OTP_SENDER": "whatsapp", **fake.env("secret", "verify"),
           "WHATSAPP_OTP_TEMPLATE": "kode_verifikasi_vaksin", "WHATSAPP_OTP_TEMPLATE_LANGUAGE": "id",
           "WHATSAPP_RETRY_BASE_SECONDS": "0.01"}
    wa = assembled(Settings.from_env(env), dsn=database_url, clock=clock)
    yield wa
    wa.db.close()


def test_the_code_is_sent_as_an_authentication_template(whatsapp_backend, fake):
    assert isinstance(whatsapp_backend.otp.sender, WhatsAppOtpSender)
    assert whatsapp_backend.otp.request("c1", BUDI).status == "sent"
    whatsapp_backend.otp.drain()  # delivery comes after the reply, from the queue
    [message] = fake.sent()
    assert message["to"] == "6281234567001" and message["type"] == "template"
    template = message["template"]
    assert template["name"] == "kode_verifikasi_vaksin" and template["language"] == {"code": "id"}
    body, button = template["components"]
    code = body["parameters"][0]["text"]
    assert len(code) == 6 and code.isdigit()
    assert button == {"type": "button", "sub_type": "url", "index": "0",
                      "parameters": [{"type": "text", "text": code}]}
    assert whatsapp_backend.otp.verify("c1", code).status == "ok"


def test_unregistered_numbers_get_nothing(whatsapp_backend, fake):
    assert whatsapp_backend.otp.request("c2", "+6281299999999").status == "sent"
    whatsapp_backend.otp.drain()  # delivery comes after the reply, from the queue
    assert fake.requests == []


def test_a_failing_graph_api_is_retried_then_not_revealed(whatsapp_backend, fake, caplog):
    fake.fail_next(503, 131000, "Something went wrong", times=2)
    assert whatsapp_backend.otp.request("c3", BUDI).status == "sent"
    whatsapp_backend.otp.drain()  # delivery comes after the reply, from the queue
    assert [r.status for r in fake.requests] == [503, 503, 200]

    fake.clear()
    fake.fail_next(400, 132001, "Template name does not exist in the translation")
    with caplog.at_level(logging.INFO):
        assert whatsapp_backend.otp.request("c4", "+6281234567002").status == "sent"  # same reply
        whatsapp_backend.otp.drain()
    assert [r.status for r in fake.requests] == [400]
    assert "132001" in caplog.text and "0812****7002" in caplog.text
    assert "81234567002" not in caplog.text


def test_missing_settings_are_named(settings_env):
    with pytest.raises(ValueError, match="WHATSAPP_ACCESS_TOKEN, WHATSAPP_PHONE_NUMBER_ID"):
        assembled(Settings.from_env({**settings_env, "OTP_SENDER": "whatsapp"}),
                       dsn="postgresql://unused@127.0.0.1:9/x")
