"""A lean HTTP/1.1 client for Rasa's POSTs to the action server, on kept-alive connections.

Rasa calls the action server two or three times per message through aiohttp. aiohttp's own work
per request (its request and response objects, URL, headers, cookie jar, timers) cost about
230 µs of CPU on this machine against 50 µs for the same request here (measured on loopback with
a 30 kB body), and at 16 users it was a tenth of the Rasa process's time. What these calls need
is small: a POST of bytes already written, to a plain http:// server, a status and a JSON body
back. The response is parsed by httptools (the parser Sanic and uvicorn use); this module only
writes the request line and headers, and keeps the connections. Anything else (https, a
compressed body, other arguments) goes to the request it replaces (rasa_server/patches/lean_http.py).

Errors are aiohttp's: aiohttp.ClientConnectionError when the server cannot be reached or closes
the connection before answering, asyncio.TimeoutError after the timeout; read_json() reads a body
as aiohttp's json() does.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Optional
from urllib.parse import urlencode, urlsplit

import aiohttp
import httptools
import orjson

# Idle connections are used again for this long: less than the 5 s after which the action
# server's Sanic closes an idle one, so a request never goes out on a connection being closed.
KEEPALIVE_S = 2.0
JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+?\+)?json")  # what aiohttp's json() accepts


class _Connection(asyncio.Protocol):
    """One connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: Optional[asyncio.Future] = None
        self.closed = False
        self.idle_since = 0.0
        self.reason = b""
        self.status = 0
        self.keep_alive = False
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(aiohttp.ClientPayloadError(f"Malformed response: {exc}"))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self._fail(aiohttp.ServerDisconnectedError())

    # httptools' side
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # known only here
        self.status = self.parser.get_status_code()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes, timeout: Optional[float]) -> tuple[int, bytes, dict[bytes, bytes], bytes]:
        loop = asyncio.get_running_loop()
        self.reason, self.headers, self.body = b"", {}, []
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, self._fail, asyncio.TimeoutError()) if timeout else None
        try:
            self.transport.write(request)
            await waiter
        except BaseException:
            self.close()  # timed out, cancelled or broken: the connection's state is unknown
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not self.keep_alive:
            self.close()
        return self.status, self.reason, self.headers, b"".join(self.body)


def handles(url: str) -> bool:
    """A plain http:// URL without credentials in it (aiohttp turns those into a header)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.username is None and parts.password is None


class Client:
    """Kept-alive connections per event loop, host and port, for URLs it handles()."""

    def __init__(self) -> None:
        self.idle: dict[tuple[int, str, int], list[_Connection]] = {}

    async def _connection(self, host: str, port: int) -> tuple[tuple[int, str, int], _Connection]:
        loop = asyncio.get_running_loop()
        key = (id(loop), host, port)
        idle = self.idle.setdefault(key, [])
        while idle:
            connection = idle.pop()
            if not connection.closed and loop.time() - connection.idle_since < KEEPALIVE_S:
                return key, connection
            connection.close()
        try:
            _, connection = await loop.create_connection(_Connection, host, port)
        except OSError as exc:
            raise aiohttp.ClientConnectionError(f"Cannot connect to {host}:{port}: {exc}") from exc
        return key, connection

    async def post(self, url: str, body: bytes, headers: dict[str, str], params: dict[str, Any],
                   timeout: Optional[float]) -> tuple[int, str, dict[bytes, bytes], bytes]:
        """POST body to url: the status, reason, headers (names in lower case) and body."""
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 80
        target = parts.path or "/"
        query = "&".join(q for q in (parts.query, urlencode(params) if params else "") if q)
        if query:
            target += "?" + query
        if parts.scheme != "http" or parts.username is not None or parts.password is not None:
            raise ValueError("Only plain http:// URLs without credentials (see handles()).")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        for name, value in headers.items():
            if name.lower() in ("host", "content-length"):
                continue
            line = f"{name}: {value}"
            if "\r" in line or "\n" in line:
                raise ValueError(f"The header {name!r} holds a line break.")
            lines.append(line)
        head = "\r\n".join(lines)
        key, connection = await self._connection(host, port)
        status, reason, response_headers, content = await connection.exchange(
            head.encode() + b"\r\n\r\n" + body, timeout)
        if not connection.closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self.idle.setdefault(key, []).append(connection)
        return status, reason.decode("latin-1"), response_headers, content

    async def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for key in [k for k in self.idle if k[0] == id(loop)]:
            for connection in self.idle.pop(key):
                connection.close()


def read_json(headers: dict[bytes, bytes], content: bytes) -> Any:
    """The body as aiohttp's ClientResponse.json() reads it: None unless the type is JSON or if
    it is blank; decoded with its charset (UTF-8 by default). orjson reads what it can, to the
    same values; what it refuses (NaN, integers beyond 64 bits) goes to json.loads as before."""
    content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
    if not JSON_TYPE.match(content_type):
        return None
    stripped = content.strip()
    if not stripped:
        return None
    charset = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")[1:]
                    if p.strip().startswith("charset=")), "utf-8")
    if charset.replace("-", "").replace("_", "") == "utf8":
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass
    return json.loads(stripped.decode(charset))
