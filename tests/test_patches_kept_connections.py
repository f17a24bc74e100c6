"""rasa_server/patches/kept_connections.py against real HTTP servers on loopback: one kept
connection per endpoint, and Rasa's headers, parameters, errors and answers, as Rasa's own
EndpointConfig.request gives them."""

from __future__ import annotations

import asyncio
import json
import types

import pytest
from aiohttp import web
from rasa.core import run as rasa_run
from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.exceptions import RasaException
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from conftest import free_port, serve_on_loopback
from rasa_server import patches

RASAS_REQUEST = EndpointConfig.request  # at collection, before any test installed anything

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


def remote_action(url: str) -> tuple[RemoteAction, DialogueStateTracker, Domain]:
    domain = Domain.from_dict({"actions": ["validate_status_form"]})
    action = RemoteAction("validate_status_form", EndpointConfig(url, headers={"Authorization": "Bearer t"}))
    return action, DialogueStateTracker("lean-client", []), domain


@pytest.fixture(scope="module")
def installed():
    patches.install(["kept_connections"])
    yield
    patches.uninstall()


def test_calls_to_an_endpoint_reuse_one_connection_and_keep_rasas_behaviour(installed):
    seen = []

    async def webhook(request):
        seen.append((request.transport.get_extra_info("peername")[1], request.headers.get("Authorization"),
                     request.query.get("token"), await request.json()))
        return web.json_response({"events": [], "responses": [{"text": "ok"}]})

    async def broken(request):
        return web.Response(status=500, text="boom")

    async def plain(request):
        return web.Response(text="not json")

    async def scenario():
        app = web.Application()
        app.router.add_post("/webhook", webhook)
        app.router.add_post("/broken", broken)
        app.router.add_post("/plain", plain)
        runner, port = await serve_on_loopback(app)
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"}, token="q")
        try:
            body = {"next_action": "action_x", "tracker": {"events": [{"event": "user", "text": "halo ✓"}]}}
            first = await endpoint.request(json=body, method="post", subpath="webhook")
            second = await endpoint.request(json=body, method="post", subpath="webhook")
            assert first == second == {"events": [], "responses": [{"text": "ok"}]}
            with pytest.raises(ClientResponseError) as error:
                await endpoint.request(json=body, subpath="broken")
            assert error.value.status == 500
            assert await endpoint.request(json=body, subpath="plain") is None
            app = types.SimpleNamespace(ctx=types.SimpleNamespace(agent=None))  # a Sanic app without agent
            await rasa_run.close_resources(app, asyncio.get_running_loop())
            assert await endpoint.request(json=body, subpath="webhook") == first  # a new session
        finally:
            await runner.cleanup()
        return body

    body = asyncio.run(scenario())
    assert len(seen) == 3
    assert seen[0][0] == seen[1][0] != seen[2][0]  # one kept connection, closed with the server
    assert seen[0][1:] == ("Bearer t", "q", body)


@pytest.mark.parametrize("name", list(ANSWERS))
def test_answers_read_as_rasa_reads_them(name, installed):
    async def scenario():
        server = Server()
        await server.start()
        try:
            endpoint = EndpointConfig(server.url(f"/answer/{name}"))

            async def rasas():
                return await RASAS_REQUEST(endpoint, json={}, method="post")

            async def kept():
                return await endpoint.request(json={}, method="post")

            return await outcome(rasas)(), await outcome(kept)()
        finally:
            await server.stop()

    expected, got = asyncio.run(scenario())
    assert got == expected
    if name == "nan-and-big":
        assert got[1]["b"] == 123456789012345678901234567890
    if name in ("rejected", "broken"):
        assert got == ("error", "ClientResponseError")


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
                await endpoint.request(json={}, method="post", timeout=aiohttp_timeout(0.2))
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


def aiohttp_timeout(seconds: float):
    import aiohttp
    return aiohttp.ClientTimeout(total=seconds)


def test_a_kept_connection_is_replaced_after_a_restart_a_timeout_and_idle_time(installed):
    """The action server restarted on its port (it closed the kept connection), a call timed
    out (its connection's state is unknown), the keep-alive time passed: each time the next
    call is answered, on a new connection."""
    async def scenario():
        server = Server()
        await server.start()
        endpoint = EndpointConfig(server.url(""))

        async def call(path="/answer/json", **kwargs):
            return await endpoint.request(json={}, method="post", subpath=path, **kwargs)

        try:
            await call()
            await call()
            port = server.port
            await server.stop()
            await asyncio.sleep(0.05)
            await server.start(port)
            assert await call() == {"events": [], "responses": [{"text": "ok \u2713"}]}
            with pytest.raises(asyncio.TimeoutError):
                await call("/slow", timeout=aiohttp_timeout(0.2))
            await call()
            await asyncio.sleep(2.5)  # beyond the kept connections' 2 s
            await call()
            await call()
        finally:
            await server.stop()
        return server.peers

    first, second, restarted, slow, after_timeout, after_idle, kept = asyncio.run(scenario())
    assert first == second and kept == after_idle
    assert len({first, restarted, after_timeout, after_idle}) == 4


def test_query_parameters_and_headers_reach_the_server(installed):
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

    assert asyncio.run(scenario()) == [
        ("/webhook", {"a": "1", "token": "q t"}, "Bearer t", "application/json",
         json.dumps({"x": "é"}, ensure_ascii=False, separators=(",", ":")).encode())]
