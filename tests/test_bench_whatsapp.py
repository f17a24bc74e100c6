"""The WhatsApp benchmark's pieces without the full stack: its signed deliveries accepted by the
real webhook (the channel on a real Sanic server, a stand-in for Rasa), a turn timed from the POST
to the reply at the fake, the fake's limits answered as Meta answers them, the report's shape.
No timing is asserted."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import requests

from simulator.fake_graph import DEFAULT_PHONE_NUMBER_ID, DEFAULT_TOKEN, FakeGraph, Limits, text
from tools import bench, bench_whatsapp
from whatsapp.channel import WhatsAppInput
from whatsapp.graph import parse_error
from whatsapp.outbound import otp_template_message, text_messages
from whatsapp.settings import WhatsAppSettings
from whatsapp_support import APP_SECRET, CITIZEN, OTHER, VERIFY_TOKEN, ChannelServer, Rasa


@pytest.fixture
def fake():
    with FakeGraph() as graph:
        yield graph


@pytest.fixture
def server(fake, database_url):
    settings = WhatsAppSettings.from_env({**fake.env(APP_SECRET, VERIFY_TOKEN), "DATABASE_URL": database_url,
                                          "WHATSAPP_RETRY_BASE_SECONDS": "0.01"})
    rasa = Rasa()
    running = ChannelServer(WhatsAppInput(settings), rasa).start()
    running.rasa = rasa
    yield running
    running.stop()


def test_a_bench_turn_is_signed_accepted_and_timed_to_its_reply(fake, server):
    async def turn() -> tuple[list[dict], bench_whatsapp.WaSample]:
        replies = bench_whatsapp.Replies(asyncio.get_running_loop())
        fake.listeners.append(replies.hear)
        sample = bench_whatsapp.WaSample()
        async with aiohttp.ClientSession() as session:
            citizen = bench_whatsapp.WaCitizen(session, server.url, APP_SECRET, replies, CITIZEN, sample, quiet=0.3)
            said = await citizen.say("halo")
            citizen.close()
        return said, sample

    said, sample = asyncio.run(turn())
    assert [m["text"]["body"] for m in said] == ["echo halo"]
    assert server.rasa.texts(CITIZEN) == ["halo"]
    assert len(sample.turn_s) == len(sample.first_s) == len(sample.accepted_s) == len(sample.webhook_s) == len(sample.wamids) == 1
    assert sample.errors == sample.webhook_refused == 0 and sample.replies == 1
    assert sample.accepted_s[0] >= sample.turn_s[0] >= sample.first_s[0] > 0

    # The same body under another secret's signature is refused, and nothing reaches Rasa.
    body, headers = bench_whatsapp.signed_delivery(text(OTHER, "halo"), "not-the-app-secret")
    assert requests.post(server.url, data=body, headers=headers, timeout=5).status_code == 403
    body, headers = bench_whatsapp.signed_delivery(text(OTHER, "halo"), APP_SECRET)
    assert json.loads(body)["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"] == OTHER
    assert requests.post(server.url, data=body, headers=headers, timeout=5).status_code == 200
    server.rasa.wait_for(2)
    assert server.rasa.texts(OTHER) == ["halo"]


def send(fake: FakeGraph, to: str) -> requests.Response:
    return requests.post(f"{fake.base_url}/v23.0/{DEFAULT_PHONE_NUMBER_ID}/messages", timeout=5,
                         headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}, json=text_messages(to, "halo")[0])


def test_the_fake_refuses_past_the_pair_rate_as_meta_does():
    with FakeGraph(limits=Limits(pair_per_s=1 / 6, pair_burst=2)) as fake:
        assert [send(fake, CITIZEN).status_code for _ in range(2)] == [200, 200]
        refused = send(fake, CITIZEN)
        assert send(fake, OTHER).status_code == 200  # another recipient: its own pair
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == 131056 and error["type"] == "OAuthException" and error["message"].startswith("(#131056)")
    assert error["error_data"]["messaging_product"] == "whatsapp" and "same phone number" in error["error_data"]["details"]
    parsed = parse_error(429, refused.json())
    assert parsed.code == 131056 and parsed.retryable  # the channel tries again, with backoff
    assert fake.refused == {131056: 1} and len(fake.sent()) == 3


def test_the_fake_refuses_past_the_numbers_throughput():
    with FakeGraph(limits=Limits(throughput_per_s=2)) as fake:
        answers = [send(fake, f"62812000000{i:02d}") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == 130429
    assert fake.refused == {130429: 1}


def test_without_limits_the_fake_refuses_nothing(fake):
    assert {send(fake, CITIZEN).status_code for _ in range(50)} == {200}
    assert not fake.refused


def test_the_code_is_read_from_the_authentication_template():
    payloads = text_messages(CITIZEN, "Kode OTP telah dikirim") + [otp_template_message(CITIZEN, "kode_verifikasi",
                                                                                         "id", "482913")]
    assert bench_whatsapp.otp_code(payloads) == "482913"
    assert bench_whatsapp.otp_code(text_messages(CITIZEN, "kode 123456")) is None
    assert "Kode OTP" in bench_whatsapp.bodies(payloads)


def test_the_report_shape_and_the_rest_figures_kept(tmp_path, capsys):
    sample = bench_whatsapp.WaSample(turn_s=[0.2 + 0.01 * i for i in range(100)],
                                     first_s=[0.1 + 0.01 * i for i in range(100)],
                                     accepted_s=[0.4 + 0.01 * i for i in range(100)],
                                     webhook_s=[0.005] * 100, replies=150, flows=9, errors=1, elapsed=10.0,
                                     late_replies=2)
    graph = {"sends": 160, "accepted": 150, "refused_by_status": {"429": 10}, "refused_by_code": {"131056": 10},
             "media_uploads": 9, "failed_after_retries": {}}
    part = bench_whatsapp.summarise_whatsapp(sample, graph, 0, {"rasa": 0.9, "actions": 0.4})
    assert part["turns"] == 100 and part["turns_per_s"] == 10.0 and part["replies_per_turn"] == 1.5
    assert set(part["turn_ms"]) == set(part["first_reply_ms"]) == set(part["last_reply_accepted_ms"]) == set(part["webhook_ms"]) == {"p50", "p95", "p99"}
    assert part["turn_ms"]["p50"] >= part["first_reply_ms"]["p50"]
    assert part["cpu_ms_per_turn"] == {"rasa": 9.0, "actions": 4.0}
    assert {"errors", "flows_completed", "pending_left", "late_replies", "webhook_refused", "graph"} <= set(part)

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"mode": "single", "load": {"ours": {}}}))
    report = {"users": 16, "duration_s": 10.0, "limits": dict(vars(Limits(1000, 1 / 6, 45, 0.1, 0.3))), **part}
    bench_whatsapp.write_report(report, path)
    written = json.loads(path.read_text())
    assert written["load"] == {"ours": {}} and written["whatsapp"]["turns"] == 100
    bench_whatsapp.print_report(report)
    shown = capsys.readouterr().out
    assert "POST -> last reply" in shown and "'131056': 10" in shown


@pytest.mark.parametrize("argv", [["--channel", "whatsapp", "--texts", "old"], ["--wa-throughput", "80"]])
def test_wrong_whatsapp_options_are_refused_before_anything_starts(monkeypatch, argv):
    monkeypatch.setattr("sys.argv", ["bench", *argv])
    monkeypatch.setattr(bench, "prepare_database", lambda url: pytest.fail("started"))
    monkeypatch.setattr(bench_whatsapp, "prepare_database", lambda url: pytest.fail("started"))
    with pytest.raises(SystemExit) as refused:
        bench.main()
    assert refused.value.code == 2
