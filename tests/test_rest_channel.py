"""The REST channel (rest/channel.py) on a Sanic test app: it answers, refuses malformed bodies,
apologises for a failed or silent turn and cuts a slow one short."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from rest.channel import APOLOGY, RestInput


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


def test_a_slow_turn_is_cut_short(rest_app, monkeypatch):
    monkeypatch.setenv("TURN_TIMEOUT_SECONDS", "0.2")

    async def slow(message):
        await message.output_channel.send_text_message(message.sender_id, "sebentar")
        await asyncio.sleep(5)

    started = time.monotonic()
    reply = post(rest_app, {"json": {"sender": "u1", "message": "halo"}}, slow)
    assert time.monotonic() - started < 2.0
    assert reply.json == [{"recipient_id": "u1", "text": APOLOGY}]  # not kept: the turn was not saved


def test_a_failed_action_keeps_what_was_said_and_apologises(rest_app):
    async def action_down(message):
        await message.output_channel.send_text_message(message.sender_id, "sebentar")
        logging.getLogger("rasa.core.processor").error("Encountered an exception while running action")

    reply = post(rest_app, {"json": {"sender": "u1", "message": "halo"}}, action_down)
    assert reply.json == [{"recipient_id": "u1", "text": "sebentar"}, {"recipient_id": "u1", "text": APOLOGY}]
