"""Access and privacy: the action server's token, masked logs, certificate links, production
settings. The retention job's tests are in tests/test_retention.py, the REST channel's in
tests/test_rest_channel.py."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.logmask import MaskingFilter, mask_text

from test_actions import tracker as make_tracker

# --- logs --------------------------------------------------------------------------------------


def test_log_lines_are_masked():
    line = ("user +62 812-3456-7001 sent 482913, NIK 3174011501900001, budi@example.com, "
            "link http://localhost:5055/certificates/Xy_9-abc.pdf")
    masked = mask_text(line)
    assert masked == ("user 0812****7001 sent ******, NIK 3174********0001, b***@example.com, "
                      "link http://localhost:5055/certificates/***.pdf")


def test_filter_masks_messages_arguments_and_exceptions(caplog):
    logger = logging.getLogger("test.privacy")
    handler = caplog.handler
    handler.addFilter(MaskingFilter())
    try:
        logger.warning("phone %s code %s", "081234567001", "123456")
        try:
            raise ValueError("bad NIK 3174011501900001")
        except ValueError:
            logger.exception("failed")
    finally:
        handler.removeFilter(handler.filters[-1])
    text = caplog.text
    assert "0812****7001" in text and "******" in text and "3174********0001" in text
    assert "81234567001" not in text and "123456" not in text and "3174011501900001" not in text


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\A(3[1-6]|5[1-3])\d{14}\Z"), st.from_regex(r"\A08[1-9]\d{8,9}\Z"),
       st.from_regex(r"\A\d{6}\Z"), st.text(alphabet="abc .,:", max_size=20))
def test_no_nik_phone_or_code_survives_masking(nik, phone, code, filler):
    masked = mask_text(f"{filler} {nik} {filler} {phone} {filler} {code} {filler}")
    assert nik not in masked and phone not in masked and f" {code} " not in masked


# --- the action server -------------------------------------------------------------------------


def webhook_body(sender: str, text: str) -> dict:
    t = make_tracker(sender, text, requested="phone_number")
    return {"next_action": "validate_certificate_form", "sender_id": sender, "version": "3.6.21",
            "domain": {"forms": {"certificate_form": {"required_slots": ["phone_number", "otp_code",
                                                                          "person", "dose"]}},
                       "slots": {}, "responses": {}},
            "tracker": t.current_state()}


def test_action_server_refuses_calls_without_the_token(action_client, backend, outbox):
    body = webhook_body("c1", "081234567001")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": backend.settings.action_server_token}):
        _, reply = action_client.post("/webhook", json=body, headers=headers)
        assert reply.status == 401
    _, reply = action_client.get("/actions")
    assert reply.status == 401
    assert outbox.messages() == []  # nothing ran: no code was sent
    _, reply = action_client.post("/webhook", json=body,
                           headers={"Authorization": f"Bearer {backend.settings.action_server_token}"})
    assert reply.status == 200
    assert len(outbox.messages("+6281234567001")) == 1
    _, health = action_client.get("/health")
    assert health.status == 200


def test_action_server_reads_calls_with_orjson_and_refuses_malformed_ones(action_app, action_client, backend):
    from actions.server import FastJSONRequest

    assert action_app.request_class is FastJSONRequest
    headers = {"Authorization": f"Bearer {backend.settings.action_server_token}"}
    for body in ("{", '{"next_action": "validate_certificate_form", ', "\xff\xfe", "[1, 2"):
        _, reply = action_client.post("/webhook", data=body, headers=headers)
        assert reply.status == 400
    _, reply = action_client.post("/webhook", data=json.dumps(webhook_body("c9", "nomor saya 0812 3456 7009")),
                                  headers=headers)
    assert reply.status == 200 and reply.json["events"]


def test_certificate_links_404_when_wrong_or_expired(action_client, backend, outbox, clock):
    backend.otp.request("c1", "+6281234567002")
    backend.otp.verify("c1", outbox.last_code("+6281234567002"))
    _, _, token = backend.repo.create_certificate_link("c1", 1)
    _, ok = action_client.get(f"/certificates/{token}.pdf")
    assert ok.status == 200 and ok.headers["content-type"] == "application/pdf"
    assert ok.body.startswith(b"%PDF")
    for bad in (f"{token[:-1]}x.pdf", token, "nothing.pdf", "%27%20OR%201%3D1.pdf", "a" * 300 + ".pdf"):
        _, reply = action_client.get(f"/certificates/{bad}")
        assert reply.status == 404 and b"PDF" not in reply.body
    clock.advance(backend.settings.certificate_link_ttl_seconds)
    _, expired = action_client.get(f"/certificates/{token}.pdf")
    assert expired.status == 404


def test_production_settings_refuse_missing_secrets_and_skip_demo_data(tmp_path):
    from backend import Settings

    # Production secrets are at least 32 bytes (tests/test_security_deploy.py refuses shorter).
    env = {"VAR_DIR": str(tmp_path), "REQUIRE_SECRETS": "1", "ACTION_SERVER_TOKEN": "t" * 31 + "u"}
    with pytest.raises(ValueError, match="OTP_HASH_KEY"):
        Settings.from_env(env)
    production = Settings.from_env({**env, "OTP_HASH_KEY": "k" * 31 + "l", "SEED_DEMO_DATA": "0",
                                    "CERTIFICATE_SIGNING_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="})
    assert production.seed_demo_data is False and production.otp_hash_key == b"k" * 31 + b"l"
    assert not (tmp_path / "secrets").exists()
    assert Settings.from_env({"VAR_DIR": str(tmp_path)}).seed_demo_data is True
