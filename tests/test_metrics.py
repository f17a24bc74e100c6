"""Observability end to end: the real action server and Rasa (trained model, test PostgreSQL)
started as processes with LOG_FORMAT=json and metrics on free ports; their /metrics read
with prometheus_client's parser after real turns over the REST channel and the WhatsApp
webhook; their log files read back line by line."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import Outbox, free_port, start_stack
from tools.stack import MODEL, Stack

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")

APP_SECRET = "metrics-test-app-secret"


@pytest.fixture(scope="module")
def stack(database_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observed")
    running = Stack(database_url, rasa_port=free_port(), action_port=free_port(), log_dir=tmp / "log",
                    metrics_port_rasa=free_port(), metrics_port_actions=free_port(),
                    extra_env={"VAR_DIR": str(tmp), "OTP_OUTBOX": str(tmp / "outbox.jsonl"),
                               "OTP_HASH_KEY": "metrics-test-key", "LOG_FORMAT": "json",
                               # DEBUG: Rasa logs each message's text and slots; all of it masked
                               "LOG_LEVEL": "DEBUG",
                               "WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": "metrics-test"})
    start_stack(running, tmp / "log")
    running.outbox = tmp / "outbox.jsonl"
    yield running
    running.stop()


def say(stack: Stack, sender: str, text: str) -> str:
    reply = requests.post(f"http://127.0.0.1:{stack.rasa_port}/webhooks/rest/webhook",
                          json={"sender": sender, "message": text}, timeout=30)
    reply.raise_for_status()
    return "\n".join(m.get("text", "") for m in reply.json())


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of a metrics endpoint: (name, sorted labels) -> value."""
    reply = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def test_both_endpoints_answer_with_their_series_after_a_turn(stack, backend):
    rasa_before = scrape(stack.metrics_port_rasa)
    actions_before = scrape(stack.metrics_port_actions)
    sender = f"m-{uuid.uuid4().hex[:10]}"
    assert "nomor HP" in say(stack, sender, "cek status vaksin")
    assert "kode OTP" in say(stack, sender, "0812 3456 7002")
    Outbox(stack.outbox, db=backend.db).wait_for_delivery()

    rasa = scrape(stack.metrics_port_rasa)
    assert value(rasa, "asisten_turn_seconds_count", channel="rest", outcome="answered") \
        == value(rasa_before, "asisten_turn_seconds_count", channel="rest", outcome="answered") + 2
    assert value(rasa, "asisten_turn_seconds_bucket", channel="rest", outcome="answered", le="30.0") >= 2
    assert value(rasa, "asisten_lock_wait_seconds_count", store="in_memory") >= 2
    assert value(rasa, "asisten_db_pool_wait_seconds_count", pool="rest") >= 2
    [(_, model)] = [(n, dict(ls)) for n, ls in rasa if n == "asisten_model_info"]
    assert model["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()[:16]
    assert len(model["model_id"]) == 32 and model["trained_at"][:2] == "20"
    [patches] = [dict(ls) for n, ls in rasa if n == "asisten_speed_patches_info"]
    assert patches["requested"] == patches["installed"] != "none"
    assert value(rasa, "asisten_speed_patches_missing") == 0
    assert {"asisten_apologies_total", "asisten_whatsapp_signature_failures_total"} <= names(rasa)

    actions = scrape(stack.metrics_port_actions)
    assert value(actions, "asisten_otp_deliveries_total", outcome="sent") \
        == value(actions_before, "asisten_otp_deliveries_total", outcome="sent") + 1
    assert value(actions, "asisten_action_seconds_count", result="ok") \
        > value(actions_before, "asisten_action_seconds_count", result="ok")
    assert value(actions, "asisten_action_seconds_count", action="unknown") == 0
    assert value(actions, "asisten_db_pool_wait_seconds_count", pool="backend") > 0
    assert {"asisten_otp_refused_total", "asisten_action_apologies_total"} <= names(actions)

    # A second code at once is refused by the resend limit, and counted so.
    say(stack, sender, "kirim ulang")
    actions = scrape(stack.metrics_port_actions)
    assert value(actions, "asisten_otp_refused_total", limit="resend_wait") \
        == value(actions_before, "asisten_otp_refused_total", limit="resend_wait") + 1


def test_metrics_are_not_served_on_the_public_ports(stack):
    assert requests.get(f"http://127.0.0.1:{stack.rasa_port}/metrics", timeout=10).status_code == 404
    reply = requests.get(f"http://127.0.0.1:{stack.action_port}/metrics", timeout=10)
    assert reply.status_code in (401, 404) and "asisten_" not in reply.text


def test_an_apology_is_counted_by_cause_when_the_action_server_is_down(stack):
    before = scrape(stack.metrics_port_rasa)
    stack.stop_actions()
    try:
        assert "gangguan" in say(stack, f"m-{uuid.uuid4().hex[:10]}", "cek status vaksin")
    finally:
        stack.start_actions()
    after = scrape(stack.metrics_port_rasa)
    assert value(after, "asisten_apologies_total", channel="rest", cause="action_failed") \
        == value(before, "asisten_apologies_total", channel="rest", cause="action_failed") + 1
    assert value(after, "asisten_turn_seconds_count", channel="rest", outcome="apology") \
        == value(before, "asisten_turn_seconds_count", channel="rest", outcome="apology") + 1


def test_whatsapp_signature_failures_are_counted(stack):
    url = f"http://127.0.0.1:{stack.rasa_port}/webhooks/whatsapp/webhook"
    body = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    before = scrape(stack.metrics_port_rasa)
    wrong = "sha256=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    assert requests.post(url, data=body, headers={"X-Hub-Signature-256": wrong}, timeout=10).status_code == 403
    assert requests.post(url, data=body, timeout=10).status_code == 401
    right = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert requests.post(url, data=body, headers={"X-Hub-Signature-256": right}, timeout=10).status_code == 200
    after = scrape(stack.metrics_port_rasa)
    for reason in ("invalid", "missing"):
        assert value(after, "asisten_whatsapp_signature_failures_total", reason=reason) \
            == value(before, "asisten_whatsapp_signature_failures_total", reason=reason) + 1


def read_json_log(path) -> list[dict]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)  # every line: one JSON object
            assert {"time", "level", "logger", "message", "request_id"} <= entry.keys(), line
            entries.append(entry)
    return entries


def test_json_logs_carry_the_turn_request_id_into_the_action_server_and_no_personal_data(stack, backend):
    sender = f"m-{uuid.uuid4().hex[:10]}"
    say(stack, sender, "download sertifikat")
    say(stack, sender, "0812-3456-7001")
    code = Outbox(stack.outbox, db=backend.db).last_code("+6281234567001")
    assert "Verifikasi berhasil" in say(stack, sender, code)
    say(stack, sender, "1")
    say(stack, sender, "3174 0112 0580 0001")  # a NIK typed into the chat, for the log's sake

    rasa, actions = read_json_log(stack.log_dir / "rasa.log"), read_json_log(stack.log_dir / "actions.log")
    rasa_ids = {e["request_id"] for e in rasa if e["request_id"]}
    action_ids = {e["request_id"] for e in actions if e["request_id"]}
    assert len(rasa_ids & action_ids) >= 5, "the turns' ids appear in both processes' lines"
    assert all(len(i) == 16 for i in rasa_ids | action_ids)
    # Rasa at DEBUG logs the messages' texts: each masked.
    assert any("0812****7001" in e["message"] for e in rasa)
    everything = (stack.log_dir / "rasa.log").read_text() + (stack.log_dir / "actions.log").read_text()
    for secret in ("81234567001", "3456-7001", code, "3174011205800001", "3174 0112 0580 0001"):
        assert secret not in everything
