"""rasa_server/patches/kept_connections.py: one kept connection, Rasa's headers, errors and answers."""

from __future__ import annotations

import asyncio
import types

import pytest
from rasa.core import run as rasa_run
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from conftest import serve_on_loopback
from rasa_server import patches


@pytest.fixture(scope="module")
def installed():
    patches.install(["kept_connections"])
    yield
    patches.uninstall()


def test_calls_to_an_endpoint_reuse_one_connection_and_keep_rasas_behaviour(installed):
    from aiohttp import web

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
