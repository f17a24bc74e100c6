"""rasa_server/http_client.py against real HTTP servers on loopback: what Rasa's calls to the
action server get from it is what they got from aiohttp."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_exceptions import ContentTypeError
from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.exceptions import RasaException
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from conftest import free_port, serve_on_loopback
from rasa_server import http_client, patches

# (status, content type, body, chunked): answers a server may give.
ANSWERS = {
    "json": (200, "application/json", b'{"events": [], "responses": [{"text": "ok \\u2713"}]}', False),
    "json-chunked": (200, "application/json", b'{"events": [{"event": "slot", "name": "a", "value": 1}]}', True),
    "json-latin1": (200, "application/json; charset=iso-8859-1", '{"text": "caf\xe9"}'.encode("latin-1"), False),
    "problem+json": (200, "application/problem+json", b'{"a": 1}', False),
    "nan-and-big": (200, "application/json", b'{"a": NaN, "b": 123456789012345678901234567890}', False),
    "blank": (200, "application/json", b"  \n", False),
    "text": (200, "text/plain", b"not json", False),
    "no-type": (200, None, b'{"a": 1}', False),
    "bad-json": (200, "application/json", b'{"a": ', False),
    "rejected": (400, "application/json", b'{"action_name": "validate_status_form", "error": "no"}', False),
    "broken": (500, "text/plain", b"boom", False),
}


async def answer(request: web.Request) -> web.StreamResponse:
    status, content_type, body, chunked = ANSWERS[request.match_info["name"]]
    await request.read()
    response = web.StreamResponse(status=status)
    if content_type:
        response.headers["Content-Type"] = content_type
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(body)
    await response.prepare(request)
    if chunked:
        await response.write(body[:10])
        await response.write(body[10:])
    else:
        await response.write(body)
    await response.write_eof()
    return response


class Server:
    def __init__(self) -> None:
        self.peers: list[int] = []
        self.app = web.Application()
        self.app.router.add_post("/answer/{name}", self.record(answer))
        self.app.router.add_post("/slow", self.record(self.slow))
        self.app.router.add_post("/hang-up", self.record(self.hang_up))
        self.runner: web.AppRunner | None = None
        self.port = 0

    def record(self, handler):
        async def recorded(request):
            self.peers.append(request.transport.get_extra_info("peername")[1])
            return await handler(request)
        return recorded

    @staticmethod
    async def slow(request):
        await asyncio.sleep(1)
        return web.json_response({})

    @staticmethod
    async def hang_up(request):
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.json_response({})

    async def start(self, port: int = 0) -> None:
        self.runner, self.port = await serve_on_loopback(self.app, port)

    async def stop(self) -> None:
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def outcome(call):
    async def run():
        try:
            return "value", await call()
        except Exception as exc:  # noqa: BLE001 - compared by type
            return "error", type(exc).__name__
    return run


@pytest.mark.parametrize("name", list(ANSWERS))
def test_answers_read_as_aiohttp_reads_them(name):
    async def scenario():
        server = Server()
        await server.start()
        try:
            async def through_aiohttp():
                async with aiohttp.ClientSession() as session:
                    async with session.post(server.url(f"/answer/{name}"), data=b"{}") as response:
                        if response.status >= 400:
                            return response.status, await response.read()
                        try:
                            return await response.json()
                        except ContentTypeError:
                            return None

            async def through_lean():
                status, _, headers, body = await http_client.Client().post(
                    server.url(f"/answer/{name}"), b"{}", {"Content-Type": "application/json"}, {}, 5)
                if status >= 400:
                    return status, body
                return http_client.read_json(headers, body)

            return await outcome(through_aiohttp)(), await outcome(through_lean)()
        finally:
            await server.stop()

    expected, got = asyncio.run(scenario())
    assert got == expected
    if name == "nan-and-big":
        assert got[1]["b"] == 123456789012345678901234567890


def remote_action(url: str) -> tuple[RemoteAction, DialogueStateTracker, Domain]:
    domain = Domain.from_dict({"actions": ["validate_status_form"]})
    action = RemoteAction("validate_status_form", EndpointConfig(url, headers={"Authorization": "Bearer t"}))
    return action, DialogueStateTracker("lean-client", []), domain


@pytest.fixture
def installed():
    patches.install()
    yield
    patches.uninstall()


def test_rasa_sees_the_same_errors_from_the_action_server(installed):
    """A rejection (400) stays a rejection, a server error or an unreachable server a
    RasaException, a slow server a timeout; each through Rasa's own RemoteAction."""
    async def scenario():
        server = Server()
        await server.start()
        seen = {}
        try:
            for name, url in [("rejected", server.url("/answer/rejected")), ("broken", server.url("/answer/broken")),
                              ("hang-up", server.url("/hang-up")), ("nobody", f"http://127.0.0.1:{free_port()}")]:
                action, tracker, domain = remote_action(url)
                with pytest.raises(Exception) as error:
                    await action.run(None, None, tracker, domain)
                seen[name] = error.value
            endpoint = EndpointConfig(server.url("/slow"))
            with pytest.raises(asyncio.TimeoutError):
                await endpoint.request(json={}, method="post", timeout=0.2)
            with pytest.raises(ClientResponseError) as error:
                await EndpointConfig(server.url("/answer/broken")).request(json={}, method="post")
            assert (error.value.status, error.value.text) == (500, b"boom")
        finally:
            await server.stop()
        return seen

    seen = asyncio.run(scenario())
    assert isinstance(seen["rejected"], ActionExecutionRejection)
    assert seen["rejected"].action_name == "validate_status_form"
    for name in ("broken", "hang-up", "nobody"):
        assert type(seen[name]) is RasaException, name
    assert "Couldn't connect" in str(seen["hang-up"]) and "Couldn't connect" in str(seen["nobody"])


def test_connections_are_kept_and_replaced_when_gone(monkeypatch):
    """One connection for calls in a row; a new one after the server restarted (the old one was
    closed by it), after a timeout (its state is unknown), and after the keep-alive time."""
    async def scenario():
        client = http_client.Client()
        server = Server()
        await server.start()

        async def call(path="/answer/json", timeout=5):
            return await client.post(server.url(path), b"{}", {}, {"token": "q"}, timeout)

        try:
            await call()
            await call()
            port = server.port
            await server.stop()
            await asyncio.sleep(0.05)
            await server.start(port)  # the action server restarted on its port
            assert (await call())[0] == 200
            with pytest.raises(asyncio.TimeoutError):
                await call("/slow", timeout=0.2)
            await call()
            monkeypatch.setattr(http_client, "KEEPALIVE_S", 0.05)
            await asyncio.sleep(0.1)
            await call()
            await call()
            await client.close(asyncio.get_running_loop())
            assert client.idle == {}
        finally:
            await server.stop()
        return server.peers

    peers = asyncio.run(scenario())
    first, second, restarted, slow, after_timeout, after_idle, kept = peers
    assert first == second and slow == restarted and kept == after_idle  # kept
    assert len({first, restarted, after_timeout, after_idle}) == 4  # replaced


def test_a_header_with_a_line_break_is_refused():
    async def scenario():
        await http_client.Client().post("http://127.0.0.1:9/x", b"", {"X-A": "b\r\nX-Injected: 1"}, {}, 1)

    with pytest.raises(ValueError):
        asyncio.run(scenario())


@pytest.mark.parametrize("url, handled", [("http://actions:5055/webhook", True), ("https://actions/webhook", False),
                                          ("http://user:secret@actions/webhook", False), ("ftp://actions/x", False)])
def test_only_plain_http_urls_without_credentials_are_handled(url, handled):
    assert http_client.handles(url) is handled


def test_query_parameters_and_headers_reach_the_server():
    async def scenario():
        seen = []

        async def echo(request):
            seen.append((request.path, dict(request.query), request.headers.get("Authorization"),
                         request.headers.get("Content-Type"), await request.read()))
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/webhook", echo)
        runner, port = await serve_on_loopback(app)
        try:
            endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook?a=1", headers={"Authorization": "Bearer t"},
                                      token="q t")
            assert await endpoint.request(json={"x": "é"}, method="post") == {}
        finally:
            await runner.cleanup()
        return seen

    patches.install()
    try:
        seen = asyncio.run(scenario())
    finally:
        patches.uninstall()
    assert seen == [("/webhook", {"a": "1", "token": "q t"}, "Bearer t", "application/json",
                     json.dumps({"x": "é"}, ensure_ascii=False, separators=(",", ":")).encode())]
