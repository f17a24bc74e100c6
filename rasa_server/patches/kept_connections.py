"""Kept-alive connections to the action server, bodies written by orjson.

Replaces `EndpointConfig.request` and wraps `rasa.core.run.close_resources`.
Why: Rasa opens a new aiohttp session, and so a new TCP connection, for every call to the
action server (two or three per message) and closes it after the reply; and writes the body
(the whole conversation) with json.dumps. Here one aiohttp session per endpoint and event loop is
kept, its idle connections dropped after 2 s (before the 5 s after which the action server's
Sanic closes one, so a request never goes out on a connection the server is closing), without a
cookie jar (the action server sets none); the body is written by orjson (or is the ActionCall's
body that stored_events_json wrote), the reply read by orjson. Everything else is Rasa's
`EndpointConfig.request`: the same headers, parameters, errors (`ClientResponseError`), `None`
for a reply that is not JSON, and timeout. The sessions are closed with Rasa's own resources
when the server stops.
Rasa internals touched: `EndpointConfig.request`, `EndpointConfig.headers`, `basic_auth`,
`cafile`, `combine_parameters`, `rasa.utils.endpoints.concat_url`, `ClientResponseError`,
`rasa.core.run.close_resources`, `rasa.core.constants.DEFAULT_REQUEST_TIMEOUT`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from rasa_server.jsonio import dumps_bytes, read_json
from rasa_server.patches import patch
from rasa_server.patches.stored_events_json import ActionCall


def install() -> None:
    import asyncio
    import ssl

    import aiohttp
    from rasa.core import run
    from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT
    from rasa.shared.exceptions import FileNotFoundException
    from rasa.utils.endpoints import ClientResponseError, EndpointConfig, concat_url

    kept: dict[tuple[int, int], aiohttp.ClientSession] = {}

    def session_for(endpoint: EndpointConfig) -> aiohttp.ClientSession:
        key = (id(endpoint), id(asyncio.get_running_loop()))
        session = kept.get(key)
        if session is None or session.closed:
            # What Rasa's endpoint.session() builds, with a connector that keeps connections.
            auth = (aiohttp.BasicAuth(endpoint.basic_auth["username"], endpoint.basic_auth["password"])
                    if endpoint.basic_auth else None)
            session = aiohttp.ClientSession(
                headers=endpoint.headers, auth=auth, timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2), cookie_jar=aiohttp.DummyCookieJar())
            kept[key] = session
        return session

    async def request(self: EndpointConfig, method: str = "post", subpath: Optional[str] = None,
                      content_type: Optional[str] = "application/json", compress: bool = False,
                      **kwargs: Any) -> Optional[Any]:
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if "headers" in kwargs:
            headers.update(kwargs.pop("headers"))
        if self.headers:
            headers.update(self.headers)
        if "json" in kwargs:  # written here, as bytes (aiohttp would write a str, then encode it)
            call = kwargs.pop("json")
            kwargs["data"] = call.body if isinstance(call, ActionCall) else dumps_bytes(call)
        sslcontext = None
        if self.cafile:
            try:
                sslcontext = ssl.create_default_context(cafile=self.cafile)
            except FileNotFoundError as e:
                raise FileNotFoundException(f"Failed to find certificate file, "
                                            f"'{os.path.abspath(self.cafile)}' does not exist.") from e
        url = concat_url(self.url, subpath)
        params = self.combine_parameters(kwargs)
        async with session_for(self).request(
            method, url, headers=headers, params=params, compress=compress, ssl=sslcontext, **kwargs,
        ) as response:
            if response.status >= 400:
                raise ClientResponseError(response.status, response.reason, await response.content.read())
            # aiohttp's json() without its content-type error, read by orjson.
            return read_json(response.headers.get("Content-Type", ""), await response.read())

    original_close = run.close_resources

    async def close_resources(app: Any, loop: Any) -> None:
        for key in [k for k in kept if k[1] == id(loop)]:
            await kept.pop(key).close()
        await original_close(app, loop)

    patch(EndpointConfig, "request", request)
    patch(run, "close_resources", close_resources)
