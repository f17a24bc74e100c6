"""Reading Meta's webhooks: signature, message types, batches, statuses, bodies of any shape.

The payloads are those of tests/whatsapp_payloads/; any JSON is read without an exception and
never yields a message from nobody.
"""

from __future__ import annotations

import json
import logging

from hypothesis import given, settings, strategies as st

from whatsapp.inbound import read_webhook, sign, signature_is_valid
from whatsapp_support import CITIZEN, OTHER, payload

SECRET = "app-secret"


def test_signature_is_an_hmac_of_the_raw_body():
    body = json.dumps(payload("unicode"), ensure_ascii=False).encode()
    good = sign(SECRET, body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert signature_is_valid(SECRET, body, good)
    assert signature_is_valid(SECRET, body, good.upper().replace("SHA256=", "sha256="))
    assert not signature_is_valid(SECRET, body + b" ", good)  # the bytes as sent, not re-serialised
    assert not signature_is_valid("other-secret", body, good)
    for bad in (None, "", "sha256=", "sha1=" + good[7:], good[7:], "sha256=zz"):
        assert not signature_is_valid(SECRET, body, bad)
    assert not signature_is_valid("", body, sign("", body))  # no secret configured: nothing passes


def read_one(name: str):
    messages, statuses = read_webhook(payload(name))
    assert len(messages) == 1 and statuses == []
    return messages[0]


def test_text():
    message = read_one("text")
    assert (message.action, message.text, message.wa_id, message.kind) == ("rasa", "halo", CITIZEN, "text")
    assert message.wamid.startswith("wamid.") and message.phone_number_id == "106540352242922"
    assert message.metadata() == {"wa_id": CITIZEN, "wamid": message.wamid, "whatsapp_type": "text",
                                  "timestamp": message.timestamp}


def test_button_and_list_replies_give_their_ids_and_template_buttons_their_payload():
    assert read_one("button_reply").text == "/download_certificate"
    assert read_one("list_reply").text == "tanggal lahir"
    assert read_one("template_button").text == "/check_vaccination_status"


def test_other_types_are_answered_without_rasa():
    for name in ("sticker", "location", "reaction"):
        message = read_one(name)
        assert (message.action, message.text) == ("unsupported", None), name
    removed = payload("reaction")
    removed["entry"][0]["changes"][0]["value"]["messages"][0]["reaction"].pop("emoji")
    assert read_webhook(removed)[0][0].action == "ignore"


def test_unicode_and_emoji_survive():
    message = read_one("unicode")
    assert message.text == "Halo kak 🙏🏽 sertifikat vaksin sy gak muncul 😭 — tolong dicek ya ❤️ éè 中文"


def test_statuses_produce_no_messages_and_failures_are_logged_without_the_number(caplog):
    from whatsapp.inbound import log_statuses

    messages, statuses = read_webhook(payload("statuses"))
    assert messages == [] and [s.status for s in statuses] == ["sent", "delivered", "read", "failed"]
    with caplog.at_level(logging.INFO, logger="whatsapp"):
        log_statuses(statuses)
    assert "131047" in caplog.text and "0812****7004" in caplog.text
    assert OTHER not in caplog.text and "81234567004" not in caplog.text
    assert caplog.text.count("could not deliver") == 1


def test_batches_are_read_whole_in_order():
    messages, statuses = read_webhook(payload("batched", fresh_ids=False))
    assert [(m.wa_id, m.text) for m in messages] == [(CITIZEN, "pertama"), (OTHER, "dari orang lain"),
                                                     (CITIZEN, "kedua")]
    assert [s.status for s in statuses] == ["delivered"]


def test_messages_without_a_sender_or_id_and_other_objects_are_dropped():
    data = payload("text")
    message = data["entry"][0]["changes"][0]["value"]["messages"][0]
    for broken in ({**message, "from": None}, {**message, "from": "+62 812"}, {**message, "id": ""},
                   {**message, "text": "not an object"}, {**message, "text": {"body": "   "}}, "junk", None):
        data["entry"][0]["changes"][0]["value"]["messages"] = [broken]
        found = read_webhook(data)[0]
        assert found == [] or found[0].action == "ignore"
    assert read_webhook({**payload("text"), "object": "page"}) == ([], [])
    long = payload("text")
    long["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = "a" * 2001
    assert read_webhook(long)[0][0].action == "too_long"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["object", "entry", "changes", "value", "messages", "statuses", "from", "id",
                         "type", "text", "body", "interactive", "button_reply", "metadata", "x"]),
        inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_read_without_error(value):
    wrapped = {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": value}]}]}
    for candidate in (value, wrapped):
        messages, statuses = read_webhook(candidate)
        assert all(m.wa_id.isdigit() and m.wamid for m in messages)
