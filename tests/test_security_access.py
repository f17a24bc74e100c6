"""Access to the action server (every route but the public ones needs the token, whatever the
spelling of its path, and no CORS), the WhatsApp webhook's age limit, and the simulator's
refusal to listen beyond loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import threading
import time

import pytest
from rasa_sdk.executor import ActionExecutor

from conftest import free_port
from test_security import webhook_body
# The WhatsApp channel on a real server, the fake Graph API and the stand-in for Rasa.
from test_whatsapp_channel import fake, post, rasa, server, wa_settings  # noqa: F401
from simulator.fake_graph import sticker, text, webhook
from whatsapp_support import CITIZEN

# --- the action server -------------------------------------------------------------------------

PUBLIC = {"health", "certificate", "verification_page"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO")


class AppServer:
    """A Sanic app served on 127.0.0.1 in a thread; requests go out through http.client, which
    sends the path exactly as written (no normalising of //, %xx or case)."""

    def __init__(self, app):
        self.app, self.port = app, free_port()
        app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 0.1
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> "AppServer":
        ready = threading.Event()

        def serve():
            loop = self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(self.app.create_server(
                host="127.0.0.1", port=self.port, return_asyncio_server=True, access_log=False))
            loop.run_until_complete(server.startup())
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            for connection in list(server.connections):
                if connection.transport is not None:
                    connection.transport.abort()
            loop.close()

        self.thread = threading.Thread(target=serve, name="action-server", daemon=True)
        self.thread.start()
        assert ready.wait(20), "the action server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(20)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            reply = connection.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            connection.close()


def spellings(path: str) -> list[str]:
    """Other ways of writing a path that a router might take for it."""
    first, rest = path[1], path[2:]
    return [path, path + "/", path + "//", "/" + path, path + "?x=1", path + "/?token=x",
            path.upper(), path[:1] + first.upper() + rest, f"/%{ord(first):02x}{rest}",
            f"/%{ord(first):02X}{rest}", "/%2F" + path[1:], path + "%2F", "/." + path, "/x/.." + path,
            path + "%20", path + "%00", path + ";x", path + "#x",
            f"http://127.0.0.1{path}"]


def concrete(route) -> str:
    """The route's path with a value for each parameter."""
    return "/" + re.sub(r"<[^>]+>", "x", route.path)


@pytest.fixture
def action_server(action_app, action_client, monkeypatch):
    """The action server on loopback, and a list of the actions it ran."""
    ran: list[str] = []
    run = ActionExecutor.run

    async def recording_run(self, action_call):
        ran.append(action_call.get("next_action"))
        return await run(self, action_call)

    monkeypatch.setattr(ActionExecutor, "run", recording_run)
    with AppServer(action_app) as server:
        server.ran = ran
        yield server


def rows(backend, table: str) -> int:
    return backend.db.run(lambda cur: (cur.execute(f"SELECT count(*) AS n FROM {table}"),
                                       cur.fetchone())[1])["n"]


def test_a_trailing_slash_does_not_skip_the_token(action_server, backend, outbox):
    body = json.dumps(webhook_body("c1", "081234567001")).encode()
    status, _, reply = action_server.request("POST", "/webhook/", body, {"Content-Type": "application/json"})
    assert status == 401 and b"events" not in reply
    status, _, reply = action_server.request("GET", "/actions/")
    assert status == 401 and b"action_" not in reply
    assert action_server.ran == [] and outbox.messages() == []


def test_every_non_public_route_needs_the_token_in_every_spelling(action_app, action_server,
                                                                   backend, outbox):
    names = {route.name.split(".", 1)[1]: route for route in action_app.router.routes}
    assert {"webhook", "actions"} <= set(names) and PUBLIC <= set(names)
    protected = [route for name, route in names.items() if name not in PUBLIC]
    body = json.dumps(webhook_body("c1", "081234567001")).encode()
    token = backend.settings.action_server_token
    refusals = 0
    for route in protected:
        for path in spellings(concrete(route)):
            for method in METHODS:
                for auth in (None, "Bearer wrong", token, f"Bearer {token}x", f"bearer  {token[:-1]}"):
                    headers = {"Content-Type": "application/json"}
                    if auth is not None:
                        headers["Authorization"] = auth
                    status, _, reply = action_server.request(method, path, body, headers)
                    assert status in (401, 404, 405), (method, path, auth, status, reply[:200])
                    assert b"action_" not in reply and b"events" not in reply, (method, path)
                    refusals += status == 401
    # the spellings Sanic routes to the handlers were refused, not merely missed
    assert refusals >= len(protected) * 3 * 5
    assert action_server.ran == []
    assert outbox.messages() == [] and rows(backend, "otp_challenges") == 0
    # The same call with the token runs, in the spellings that reach the handler.
    good = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for path in ("/webhook", "/webhook/"):
        status, _, reply = action_server.request("POST", path, body, good)
        assert status == 200 and json.loads(reply)["events"]
    assert action_server.ran == ["validate_certificate_form"] * 2
    status, _, reply = action_server.request("GET", "/actions", headers=good)
    assert status == 200 and {"name": "validate_certificate_form"} in json.loads(reply)


def test_unmatched_routes_are_refused_and_echo_nothing(action_server, backend):
    body = json.dumps(webhook_body("c1", "081234567001")).encode()
    good = {"Authorization": f"Bearer {backend.settings.action_server_token}"}
    for method, path, expected in (("POST", "/nothing", 404), ("GET", "//webhook", 404),
                                   ("POST", "/%77ebhook", 404), ("POST", "/health", 405),
                                   ("DELETE", "/certificates/x.pdf", 405)):
        # Without the token even a path that matches nothing is refused; with it, 404 or 405.
        for headers, status_wanted in (({}, 401), (good, expected)):
            status, _, reply = action_server.request(
                method, path, body, {"Content-Type": "application/json", **headers})
            assert status == status_wanted, (method, path, headers, status)
            assert b"081234567001" not in reply and b"request_body" not in reply
    assert action_server.ran == []


def test_public_routes_work_without_the_token(action_server, backend, outbox):
    status, _, reply = action_server.request("GET", "/health")
    assert status == 200 and json.loads(reply) == {"status": "ok"}
    status, _, reply = action_server.request("GET", "/verifikasi")
    assert status == 200 and b"Verifikasi Sertifikat" in reply
    status, _, reply = action_server.request(
        "POST", "/verifikasi", b"qr=HC1%3Arusak", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and b"Ditolak" in reply
    backend.otp.request("c1", "+6281234567002")
    backend.otp.verify("c1", outbox.last_code("+6281234567002"))
    _, _, link = backend.repo.create_certificate_link("c1", 1)
    status, headers, reply = action_server.request("GET", f"/certificates/{link}.pdf")
    assert status == 200 and headers["content-type"] == "application/pdf" and reply.startswith(b"%PDF")
    assert action_server.ran == []


def test_no_cors_headers_on_any_route(action_app, action_server, backend):
    token = backend.settings.action_server_token
    paths = [concrete(route) for route in action_app.router.routes] + ["/nothing"]
    for path in paths:
        for method in ("OPTIONS", "GET", "POST"):
            for origin in ("https://evil.example", "null", ""):
                for auth in ({}, {"Authorization": f"Bearer {token}"}):
                    headers = {"Origin": origin, "Access-Control-Request-Method": "POST",
                               "Access-Control-Request-Headers": "authorization", **auth}
                    status, reply_headers, _ = action_server.request(
                        method, path, b"{}" if method == "POST" else None, headers)
                    cors = [h for h in reply_headers if h.startswith("access-control-")]
                    assert cors == [], (method, path, origin, status, cors)
    # No preflight is answered: OPTIONS is not a method of any route.
    status, _, _ = action_server.request("OPTIONS", "/health", headers={
        "Origin": "https://evil.example", "Authorization": f"Bearer {token}"})
    assert status == 405


# --- the WhatsApp webhook's age limit ----------------------------------------------------------

DAY = 86400


def seen(database_url: str, wamid: str) -> bool:
    import psycopg

    with psycopg.connect(database_url) as connection, connection.cursor() as cur:
        cur.execute("SELECT 1 FROM whatsapp_seen_messages WHERE wamid = %s", (wamid,))
        found = cur.fetchone() is not None
    connection.close()
    return found


def test_an_old_or_future_signed_message_is_acknowledged_but_not_processed(
        server, rasa, fake, wa_settings, database_url, caplog):
    now = int(time.time())
    window = wa_settings.dedupe_days * DAY
    replays = [text(CITIZEN, "ubah email saya", timestamp=now - window - 3600),  # id forgotten
               text(CITIZEN, "status vaksin", timestamp=now - window),  # the window's very end
               sticker(CITIZEN, timestamp=now - 30 * DAY),  # would be answered without Rasa
               text(CITIZEN, "halo dari masa depan", timestamp=now + DAY),
               text(CITIZEN, "tanpa tanggal", timestamp=0)]
    with caplog.at_level(logging.WARNING, logger="whatsapp.channel"):
        for message in replays:
            assert post(server, webhook([message])).status_code == 200  # Meta need not resend
        fake.quiet_for(0.5)
    assert rasa.received == [] and fake.sent() == []
    assert not any(seen(database_url, message["id"]) for message in replays)
    warnings = [r.getMessage() for r in caplog.records if "dated outside" in r.getMessage()]
    assert len(warnings) == len(replays)
    assert not any(CITIZEN[2:] in line for line in caplog.text.splitlines())

    # A fresh message, and one delivered late but within the window, are still processed.
    late = text(CITIZEN, "masih berlaku", timestamp=now - window + 3600)
    assert post(server, webhook([late, text(CITIZEN, "halo", timestamp=now)])).status_code == 200
    assert [m.text for m in rasa.wait_for(2)] == ["masih berlaku", "halo"]
    assert [m["text"]["body"] for m in fake.wait_for_sent(2)] == ["echo masih berlaku", "echo halo"]


def test_a_batch_keeps_its_fresh_messages_and_drops_the_old_ones(server, rasa, fake):
    now = int(time.time())
    batch = webhook([text(CITIZEN, "lama", timestamp=now - 8 * DAY), text(CITIZEN, "baru", timestamp=now)])
    assert post(server, batch).status_code == 200
    assert [m.text for m in rasa.wait_for(1)] == ["baru"]
    fake.quiet_for(0.3)
    assert [m.text for m in rasa.received] == ["baru"] and len(fake.sent()) == 1


def test_the_age_limit_follows_the_dedupe_setting():
    from whatsapp.settings import MAX_CLOCK_AHEAD_SECONDS, WhatsAppSettings

    for days in ("7", "10"):
        settings = WhatsAppSettings.from_env({"WHATSAPP_DEDUPE_DAYS": days})
        assert settings.message_max_age_seconds == int(days) * DAY - MAX_CLOCK_AHEAD_SECONDS


# --- the simulator listens on loopback only ----------------------------------------------------


def nothing_listens(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.0.2.10", "no-such-host.invalid"])
def test_the_simulator_refuses_a_host_beyond_loopback(host, tmp_path, caplog):
    from simulator.server import RemoteHostRefused, Simulator

    port = free_port()
    for env in ({}, {"SIMULATOR_ALLOW_REMOTE": "0"}, {"SIMULATOR_ALLOW_REMOTE": "yes"}):
        with pytest.raises(RemoteHostRefused, match="SIMULATOR_ALLOW_REMOTE=1") as refused:
            Simulator(host=host, port=port, outbox=tmp_path / "outbox.jsonl", env=env).start()
        assert "loopback" in str(refused.value)
        assert nothing_listens(port)


def test_the_simulator_command_exits_before_listening(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SIMULATOR_ALLOW_REMOTE"}
    # A database nobody serves: the refusal must come before the command needs one.
    env.update(VAR_DIR=str(tmp_path), DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "simulator", "--host", "0.0.0.0", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # it went on to start the stack: stop all of it
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
    assert process.returncode == 2, output
    assert "SIMULATOR_ALLOW_REMOTE=1" in output and "loopback" in output and "Traceback" not in output
    assert nothing_listens(port)
    assert time.monotonic() - started < 60


def test_the_simulator_beyond_loopback_when_told_warns(tmp_path, caplog):
    import requests

    from simulator.server import Simulator

    with caplog.at_level(logging.WARNING, logger="simulator.server"):
        simulator = Simulator(host="0.0.0.0", outbox=tmp_path / "outbox.jsonl",
                              env={"SIMULATOR_ALLOW_REMOTE": "1"}).start()
    try:
        [warning] = [r for r in caplog.records if r.name == "simulator.server"]
        assert warning.levelno == logging.WARNING and "OTP" in warning.getMessage()
        assert "0.0.0.0" in warning.getMessage() and "SIMULATOR_ALLOW_REMOTE=1" in warning.getMessage()
        reply = requests.get(f"http://127.0.0.1:{simulator.port}/sim/api/config", timeout=5)
        assert reply.status_code == 200
    finally:
        simulator.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_the_simulator_on_loopback_starts_without_a_warning(host, tmp_path, caplog):
    import requests

    from simulator.server import Simulator

    with caplog.at_level(logging.WARNING, logger="simulator.server"):
        simulator = Simulator(host=host, outbox=tmp_path / "outbox.jsonl", env={}).start()
    try:
        assert [r for r in caplog.records if r.name == "simulator.server"] == []
        reply = requests.get(f"{simulator.base_url}/sim/api/config", timeout=5)
        assert reply.status_code == 200 and reply.json()["demo"]
    finally:
        simulator.stop()
