"""Rasa's POSTs to the action server through a lean HTTP/1.1 client instead of aiohttp.

Replaces `EndpointConfig.request` (whatever is installed: Rasa's own, or kept_connections') for
a POST of a JSON body to a plain http:// URL without compression, TLS or basic auth (the calls to
the action server), and wraps `rasa.core.run.close_resources`.
Why: aiohttp's own work per request (request and response objects, URL, headers, cookie jar,
timers) is several times that of writing a request line and parsing the answer with httptools
(rasa_server/http_client.py; docs/performance.md has the figures and the side-by-side check
against kept_connections' tuned aiohttp session that keeps this patch). Anything else goes to
the request it replaces. The same headers, parameters, errors (`ClientResponseError`), `None` for
a reply that is not JSON, and timeout as Rasa's `EndpointConfig.request`.
Rasa internals touched: `EndpointConfig.request`, `EndpointConfig.headers`, `basic_auth`,
`cafile`, `combine_parameters`, `rasa.utils.endpoints.concat_url`, `ClientResponseError`,
`rasa.core.run.close_resources`, `rasa.core.constants.DEFAULT_REQUEST_TIMEOUT`.
"""

from __future__ import annotations

from typing import Any, Optional

from rasa_server.jsonio import dumps_bytes
from rasa_server.patches import patch
from rasa_server.patches.stored_events_json import ActionCall


def install() -> None:
    from rasa.core import run
    from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT
    from rasa.utils.endpoints import ClientResponseError, EndpointConfig, concat_url

    from rasa_server import http_client

    lean = http_client.Client()
    previous = EndpointConfig.request

    async def request(self: EndpointConfig, method: str = "post", subpath: Optional[str] = None,
                      content_type: Optional[str] = "application/json", compress: bool = False,
                      **kwargs: Any) -> Optional[Any]:
        url = concat_url(self.url, subpath)
        if (method.lower() != "post" or compress or self.cafile or self.basic_auth or not http_client.handles(url)
                or not set(kwargs) <= {"json", "timeout"} or "json" not in kwargs):
            return await previous(self, method, subpath, content_type, compress, **kwargs)
        call = kwargs["json"]
        body = call.body if isinstance(call, ActionCall) else dumps_bytes(call)
        headers = {"Content-Type": content_type} if content_type else {}
        if self.headers:
            headers.update(self.headers)
        timeout = kwargs.get("timeout", DEFAULT_REQUEST_TIMEOUT)
        status, reason, response_headers, response = await lean.post(
            url, body, headers, self.combine_parameters(kwargs), getattr(timeout, "total", timeout))
        if status >= 400:
            raise ClientResponseError(status, reason, response)
        return http_client.read_json(response_headers, response)

    original_close = run.close_resources

    async def close_resources(app: Any, loop: Any) -> None:
        await lean.close(loop)
        await original_close(app, loop)

    patch(EndpointConfig, "request", request)
    patch(run, "close_resources", close_resources)
