"""Calls to Meta's Graph API (messages, media): retries with backoff and jitter, Meta's error codes.

Two clients share the retry policy and the error parsing: `GraphClient` (aiohttp) in the Rasa
process, where the channel must not block the event loop, and `SyncGraphClient` (requests) for
the OTP sender, which runs in the action server's database threads like the other senders.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import requests

from backend.events import events
from backend.identifiers import mask_phone

from .settings import WhatsAppSettings

log = logging.getLogger(__name__)

# Meta answers these when it is busy or broken; a later try may succeed. Everything else in
# 4xx is a mistake in the request (or the token) that retrying cannot fix.
RETRY_STATUSES = {429, 500, 502, 503, 504}
# Meta asks to handle errors by their code, not the HTTP status (which differs between its
# docs, e.g. 400 or 429 for code 4): rate limits (4, 80007, 130429 throughput, 131056 pair rate)
# and a service temporarily down (2, 131016, 133004) are worth another try whatever the status.
RETRY_CODES = frozenset({2, 4, 80007, 130429, 131016, 131056, 133004})
MAX_DOWNLOAD_BYTES = 10 * 1024 * 1024  # a certificate is ~100 kB; Meta takes documents up to 100 MB
_LONG_NUMBER = re.compile(r"\+?\d{8,}")


def mask_wa_id(wa_id: str) -> str:
    """6281234567001 -> 0812****7001, as every log line of this project shows a number."""
    digits = "".join(c for c in str(wa_id) if c.isdigit())
    return mask_phone("+" + digits) if digits else "?"


def scrub(text: Any, limit: int = 200) -> str:
    """Meta's error texts may quote a number back at us; a log line must not."""
    return _LONG_NUMBER.sub("<number>", str(text))[:limit]


@dataclass
class GraphError(Exception):
    """A request the Graph API refused or that never got through (status 0)."""
    status: int
    code: int | None = None
    title: str = ""
    details: str = ""
    fbtrace_id: str = ""

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "no answer"
        return f"{where}, Meta error {self.code}: {scrub(self.title)} {scrub(self.details)}".strip()

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRY_STATUSES or self.code in RETRY_CODES


def parse_error(status: int, body: Any) -> GraphError:
    """Meta's error body: {"error": {"message", "type", "code", "error_data": {"details"}, "fbtrace_id"}}."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(status, None, "unexpected answer")
    data = error.get("error_data") if isinstance(error.get("error_data"), dict) else {}
    code = error.get("code")
    return GraphError(status, code if isinstance(code, int) else None, str(error.get("message") or ""),
                      str(data.get("details") or ""), str(error.get("fbtrace_id") or ""))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_seconds: float = 0.5
    max_seconds: float = 8.0

    @classmethod
    def from_settings(cls, settings: WhatsAppSettings) -> "RetryPolicy":
        return cls(settings.retry_attempts, settings.retry_base_seconds, settings.retry_max_seconds)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before try `attempt + 1`: exponential, with full jitter so that many
        replicas retrying after the same outage do not all hit Meta at the same instant."""
        if retry_after:
            try:
                return min(self.max_seconds, max(0.0, float(retry_after)))
            except ValueError:
                pass
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** attempt))
        return random.uniform(ceiling / 2, ceiling)


def _log_failure(what: str, error: GraphError) -> None:
    # Counted in whichever process called (Rasa's channel, the action server's OTP sender).
    events().graph_error(str(error.code) if error.code is not None
                         else f"http_{error.status}" if error.status else "no_answer")
    if error.retryable:
        log.error("Graph API %s failed after retries: %s", what, error)
    else:
        log.warning("Graph API refused %s: %s (fbtrace_id %s)", what, error, error.fbtrace_id or "-")


class GraphClient:
    """The async client used by the channel; one aiohttp session per event loop."""

    def __init__(self, settings: WhatsAppSettings):
        self.settings = settings
        self.retry = RetryPolicy.from_settings(settings)
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.access_token}"}

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.http_timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def _request(self, what: str, method: str, url: str, **kwargs) -> dict:
        session = await self.session()
        error = GraphError(0, None, "not tried")
        for attempt in range(self.retry.attempts):
            retry_after = None
            try:
                # A multipart body is consumed by a try: build it afresh each time.
                data = kwargs["data"]() if callable(kwargs.get("data")) else kwargs.get("data")
                async with session.request(method, url, headers=self._headers(), json=kwargs.get("json"),
                                           data=data) as reply:
                    try:
                        body = await reply.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        body = None
                    if 200 <= reply.status < 300 and isinstance(body, dict):
                        return body
                    error = parse_error(reply.status, body)
                    retry_after = reply.headers.get("Retry-After")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = GraphError(0, None, type(exc).__name__)
            if not error.retryable or attempt + 1 == self.retry.attempts:
                break
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
        _log_failure(what, error)
        raise error

    async def send_message(self, payload: dict) -> str:
        """POST /{phone-number-id}/messages; returns the wamid of the sent message."""
        url = f"{self.settings.api_root}/{self.settings.phone_number_id}/messages"
        body = await self._request(f"a {payload.get('type', '?')} message to "
                                   f"{mask_wa_id(payload.get('to', ''))}", "POST", url, json=payload)
        messages = body.get("messages")
        return str(messages[0].get("id", "")) if isinstance(messages, list) and messages else ""

    async def upload_media(self, content: bytes, mime_type: str, filename: str) -> str:
        """POST /{phone-number-id}/media as multipart; returns the media id."""
        url = f"{self.settings.api_root}/{self.settings.phone_number_id}/media"

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("messaging_product", "whatsapp")
            data.add_field("type", mime_type)
            data.add_field("file", content, filename=filename, content_type=mime_type)
            return data

        body = await self._request("a media upload", "POST", url, data=form)
        media_id = body.get("id")
        if not media_id:
            raise GraphError(200, None, "upload answered without a media id")
        return str(media_id)

    async def download(self, url: str) -> tuple[bytes, str]:
        """GET a certificate from the action server: content and content type. A redirect is
        not followed but refused: it could lead anywhere, and the action server never sends one."""
        session = await self.session()
        async with session.get(url, allow_redirects=False) as reply:
            if reply.status != 200:
                raise GraphError(reply.status, None, "download refused")
            content = await reply.content.read(MAX_DOWNLOAD_BYTES + 1)
            if len(content) > MAX_DOWNLOAD_BYTES:
                raise GraphError(reply.status, None, "download too large")
            return content, reply.headers.get("Content-Type", "")


class SyncGraphClient:
    """The same calls for code that runs in threads (the OTP sender)."""

    def __init__(self, settings: WhatsAppSettings, sleep=time.sleep):
        self.settings = settings
        self.retry = RetryPolicy.from_settings(settings)
        self.sleep = sleep
        self.http = requests.Session()

    def send_message(self, payload: dict) -> str:
        url = f"{self.settings.api_root}/{self.settings.phone_number_id}/messages"
        what = f"a {payload.get('type', '?')} message to {mask_wa_id(payload.get('to', ''))}"
        error = GraphError(0, None, "not tried")
        for attempt in range(self.retry.attempts):
            retry_after = None
            try:
                reply = self.http.post(url, json=payload, timeout=self.settings.http_timeout_seconds,
                                       headers={"Authorization": f"Bearer {self.settings.access_token}"})
                try:
                    body = reply.json()
                except ValueError:
                    body = None
                if 200 <= reply.status_code < 300 and isinstance(body, dict):
                    messages = body.get("messages")
                    return str(messages[0].get("id", "")) if isinstance(messages, list) and messages else ""
                error = parse_error(reply.status_code, body)
                retry_after = reply.headers.get("Retry-After")
            except requests.RequestException as exc:
                error = GraphError(0, None, type(exc).__name__)
            if not error.retryable or attempt + 1 == self.retry.attempts:
                break
            self.sleep(self.retry.delay(attempt, retry_after))
        _log_failure(what, error)
        raise error
