"""Access, privacy and bad input: the action server's token, masked logs, the retention job,
and the REST channel's handling of malformed bodies and failed turns."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from sanic import Sanic

from backend.logmask import MaskingFilter, mask_text
from backend.retention import purge
from rest.channel import APOLOGY, RestInput, answer_turn

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


# --- retention ---------------------------------------------------------------------------------


def test_purge_deletes_what_is_older_than_the_retention(backend, outbox, clock):
    backend.otp.request("old", "+6281234567002")
    backend.otp.verify("old", outbox.last_code("+6281234567002"))
    backend.repo.create_certificate_link("old", 1)
    clock.advance(31 * 24 * 3600)
    backend.otp.request("new", "+6281234567003")
    deleted = purge(backend.db, 30, now=clock())
    assert (deleted["otp_challenges"], deleted["auth_sessions"], deleted["certificate_links"]) == (1, 1, 1)
    rows = backend.db.run(lambda cur: (cur.execute("SELECT conversation_id FROM otp_challenges"), cur.fetchall())[1])
    assert [r["conversation_id"] for r in rows] == ["new"]
    kept = backend.db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM audit_log"), cur.fetchone())[1])
    assert kept["n"] == 1  # the audit log stays
    assert purge(backend.db, 30, now=clock() + timedelta(seconds=1))["otp_challenges"] == 0


def test_purge_goes_in_batches_and_keeps_what_a_returning_citizen_wrote(backend, database_url, clock, monkeypatch):
    import asyncio

    from rasa.shared.core.events import UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    from backend import retention
    from conftest import make_store

    monkeypatch.setattr(retention, "BATCH", 2)
    for n in range(5):
        backend.otp.request(f"old-{n}", f"+628123456700{n + 1}")
    store = make_store(database_url)
    old, new = clock().timestamp(), clock().timestamp() + 31 * 24 * 3600
    conversations = {f"retention-old-{n}": [old, old + 1] for n in range(5)}
    conversations["retention-returning"] = [old, new]  # wrote again after a month: the old event goes
    for sender, stamps in conversations.items():
        tracker = DialogueStateTracker.from_events(sender, [UserUttered("halo", timestamp=t) for t in stamps])
        asyncio.run(store.save(tracker))
    clock.advance(31 * 24 * 3600)

    find_open = retention._open_session_starts

    def citizen_writes_when_the_job_starts(db, epoch):
        found = find_open(db, epoch)
        tracker = asyncio.run(store.retrieve("retention-old-0"))
        tracker.update(UserUttered("saya kembali", timestamp=new))
        asyncio.run(store.save(tracker))
        return found

    monkeypatch.setattr(retention, "_open_session_starts", citizen_writes_when_the_job_starts)
    deleted = purge(backend.db, 30, now=clock())
    store.dispose()
    assert deleted["otp_challenges"] == 5  # three batches of at most 2
    assert deleted["events"] == 11  # every old event, in six batches of at most 2
    left = backend.db.run(lambda cur: (cur.execute(
        "SELECT sender_id, count(*) AS n FROM events WHERE sender_id LIKE 'retention-%%' GROUP BY sender_id"
        " ORDER BY sender_id"), cur.fetchall())[1])
    assert [(r["sender_id"], r["n"]) for r in left] == [("retention-old-0", 1), ("retention-returning", 1)]


def test_a_failing_rule_does_not_stop_the_others_and_fails_the_job(backend, database_url, clock, monkeypatch, caplog):
    from backend import retention

    backend.otp.request("old", "+6281234567002")
    clock.advance(31 * 24 * 3600)
    broken = [("tickets", "renamed_column < %(cutoff)s")]
    monkeypatch.setattr(retention, "RULES", broken + retention.RULES)
    with pytest.raises(retention.PurgeFailed) as failure:
        purge(backend.db, 30, now=clock())
    assert failure.value.failed == {"tickets": "UndefinedColumn"}
    assert failure.value.deleted["otp_challenges"] == 1  # purged all the same
    assert "retention: tickets not purged (UndefinedColumn)" in caplog.text

    # The job itself ends in failure, so that the CronJob shows it.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr("sys.argv", ["retention", "--days", "30"])
    with pytest.raises(SystemExit) as exit_status:
        retention.main()
    assert exit_status.value.code == 1


# --- the REST channel --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rest_app():
    Sanic.test_mode = True
    app = Sanic("rest_channel_test")
    state = {"handler": None}

    async def on_new_message(message: UserMessage):
        await state["handler"](message)

    app.blueprint(RestInput().blueprint(on_new_message), url_prefix="/webhooks/rest")
    app.ctx.state = state
    return app


def post(app, body, handler=None):
    async def echo(message):
        await message.output_channel.send_text_message(message.sender_id, f"echo {message.text}")

    app.ctx.state["handler"] = handler or echo
    _, reply = app.test_client.post("/webhooks/rest/webhook", **body)
    return reply


def test_rest_channel_answers_and_refuses_malformed_bodies(rest_app):
    assert post(rest_app, {"json": {"sender": "u1", "message": "halo"}}).json == [
        {"recipient_id": "u1", "text": "echo halo"}]
    for bad in ({"data": "not json"}, {"json": ["a"]}, {"json": {"message": "halo"}},
                {"json": {"sender": "", "message": "x"}}, {"json": {"sender": "a b", "message": "x"}},
                {"json": {"sender": "u1", "message": 5}}, {"json": {"sender": "x" * 200, "message": "x"}},
                {"json": {"sender": "6281234567001", "message": "x"}}, {"json": {"sender": "+62812", "message": "x"}}):
        assert post(rest_app, bad).status == 400
    long = post(rest_app, {"json": {"sender": "u1", "message": "a" * 5000}}).json
    assert "terlalu panjang" in long[0]["text"]


def test_a_failed_or_silent_turn_gets_an_apology(rest_app, caplog):
    async def fail(message):
        raise RuntimeError("database gone 081234567001")

    async def silent(message):
        return None

    for handler in (fail, silent):
        reply = post(rest_app, {"json": {"sender": "u1", "message": "kode 123456"}}, handler)
        assert reply.json == [{"recipient_id": "u1", "text": APOLOGY}]
    assert "123456" not in caplog.text and "081234567001" not in caplog.text


def test_a_slow_turn_is_cut_short(monkeypatch):
    monkeypatch.setenv("TURN_TIMEOUT_SECONDS", "0.2")

    async def slow(message):
        await asyncio.sleep(5)

    collector = CollectingOutputChannel()
    message = UserMessage("halo", collector, "u1")
    started = asyncio.run(_timed(answer_turn(slow, message, collector, "rest")))
    assert started < 1.0
    assert collector.messages == [{"recipient_id": "u1", "text": APOLOGY}]


async def _timed(coro) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await coro
    return loop.time() - start


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
