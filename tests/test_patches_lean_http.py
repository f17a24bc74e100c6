"""rasa_server/patches/lean_http.py: the action calls go through the lean client with Rasa's
headers, parameters, errors and answers; anything else goes to the request it replaced."""

from __future__ import annotations

import asyncio
import types

import pytest
from rasa.core import run as rasa_run
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from conftest import serve_on_loopback
from rasa_server import patches


@pytest.mark.parametrize("selection", [["lean_http"], ["kept_connections", "lean_http"]])
def test_action_calls_go_lean_and_keep_rasas_behaviour(selection):
    from aiohttp import web

    seen = []

    async def webhook(request):
        seen.append((request.method, request.transport.get_extra_info("peername")[1],
                     request.headers.get("User-Agent", ""), request.headers.get("Authorization"),
                     request.headers.get("Content-Type"), request.query.get("token"),
                     await request.json() if request.can_read_body else None))
        return web.json_response({"events": [], "responses": [{"text": "ok"}]})

    async def broken(request):
        return web.Response(status=500, text="boom")

    async def plain(request):
        return web.Response(text="not json")

    async def scenario():
        app = web.Application()
        app.router.add_post("/webhook", webhook)
        app.router.add_get("/webhook", webhook)
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
            assert error.value.status == 500 and error.value.text == b"boom"
            assert await endpoint.request(json=body, subpath="plain") is None
            assert await endpoint.request(method="get", subpath="webhook") == first  # not an action call
            app = types.SimpleNamespace(ctx=types.SimpleNamespace(agent=None))  # a Sanic app without agent
            await rasa_run.close_resources(app, asyncio.get_running_loop())
            assert await endpoint.request(json=body, subpath="webhook") == first  # a new connection
        finally:
            await runner.cleanup()
        return body

    patches.install(selection)
    try:
        body = asyncio.run(scenario())
    finally:
        patches.uninstall()
    lean = [s for s in seen if s[0] == "POST"]
    assert len(lean) == 3 and len(seen) == 4
    assert lean[0][1] == lean[1][1] != lean[2][1]  # one kept connection, closed with the server
    assert all("aiohttp" not in s[2] for s in lean)  # not aiohttp's request
    assert all(s[3:] == ("Bearer t", "application/json", "q", body) for s in lean)
    [other] = [s for s in seen if s[0] == "GET"]
    assert "aiohttp" in other[2]  # the GET went to the request lean_http replaced
