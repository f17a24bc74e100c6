"""Helpers for the WhatsApp channel tests.

The channel served by a real Sanic server in a thread (as Rasa serves it, so background turns
keep running), a recording stand-in for Rasa, a local server for certificate links, and the
webhook payload fixtures of tests/whatsapp_payloads/.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from conftest import free_port
from simulator.fake_graph import new_wamid
from whatsapp.channel import WhatsAppInput

PAYLOADS = Path(__file__).resolve().parent / "whatsapp_payloads"
APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
CITIZEN = "6281234567002"   # Siti Rahmawati's number, as WhatsApp writes it
OTHER = "6281234567004"
TOKEN = "Zk3v9Qp2LmN8xY4rT6wB_-aQ7s0dF1gH2jK3lM4nP5q"  # as secrets.token_urlsafe(32) makes them


def certificate_message(link: str, token: str = TOKEN, dose: int = 2) -> dict:
    """A bot message as Rasa makes it from utter_certificate_ready: the link in the text, the
    certificate as data."""
    caption = f"Sertifikat Dosis {dose} atas nama Siti Rahmawati (NIK 3273********0003)"
    return {"text": f"{caption} siap diunduh:\n{link}\nTautan berlaku 15 menit dan hanya untuk Anda; "
                    "jangan dibagikan.",
            "custom": {"certificate": {"token": token, "link": link, "caption": caption,
                                       "filename": f"sertifikat-vaksin-dosis-{dose}.pdf"}}}


def payload(name: str, *, fresh_ids: bool = True, fresh_times: bool = True, **replace: str) -> dict:
    """A fixture from tests/whatsapp_payloads/, with new message ids (so that the dedupe table
    of earlier runs does not drop it), its messages' timestamps moved so that the newest is now
    (the channel ignores old ones), and `OLD=new` text replacements applied."""
    text = (PAYLOADS / f"{name}.json").read_text(encoding="utf-8")
    for old, new in replace.items():
        text = text.replace(old, new)
    data = json.loads(text)
    if fresh_ids:
        for entry in data.get("entry", []):
            for change in entry.get("changes", []):
                for message in change.get("value", {}).get("messages", []):
                    message["id"] = new_wamid()
    if fresh_times:
        dated = [m for m in messages_of(data) if str(m.get("timestamp", "")).isdigit()]
        if dated:
            shift = int(time.time()) - max(int(m["timestamp"]) for m in dated)
            for message in dated:
                message["timestamp"] = str(int(message["timestamp"]) + shift)
    return data


def messages_of(data: dict) -> list[dict]:
    return [m for e in data["entry"] for c in e["changes"] for m in c["value"].get("messages", [])]


class Rasa:
    """Stands in for Rasa's agent: records each UserMessage and answers with `reply(message)`."""

    def __init__(self):
        self.received: list[UserMessage] = []
        self.reply: Callable[[UserMessage], Awaitable[list[dict]]] = self.echo
        self._lock = threading.Condition()

    @staticmethod
    async def echo(message: UserMessage) -> list[dict]:
        return [{"text": f"echo {message.text}"}]

    async def __call__(self, message: UserMessage) -> None:
        with self._lock:
            self.received.append(message)
            self._lock.notify_all()
        for bot_message in await self.reply(message):
            await message.output_channel.send_response(message.sender_id, bot_message)

    def texts(self, sender: str | None = None) -> list[str]:
        with self._lock:
            return [m.text for m in self.received if sender is None or m.sender_id == sender]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[UserMessage]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.received)} of {count} messages reached Rasa")
                self._lock.wait(left)
            return list(self.received)


class ChannelServer:
    """WhatsAppInput's blueprint on a Sanic server of its own, in a thread."""

    def __init__(self, channel: WhatsAppInput, rasa: Callable[[UserMessage], Awaitable[Any]]):
        self.channel = channel
        self.port = free_port()
        self.app = Sanic(f"whatsapp_test_{uuid.uuid4().hex[:12]}")
        self.app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 0.1
        self.app.blueprint(channel.blueprint(rasa), url_prefix="/webhooks/whatsapp")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/whatsapp/webhook"

    def start(self) -> "ChannelServer":
        ready = threading.Event()

        def serve():
            loop = self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            server = self._server = loop.run_until_complete(self.app.create_server(
                host="127.0.0.1", port=self.port, return_asyncio_server=True, access_log=False))
            loop.run_until_complete(server.startup())
            loop.run_until_complete(server.before_start())
            loop.run_until_complete(server.after_start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(server.before_stop())
            server.close()
            loop.run_until_complete(server.wait_closed())
            # Keep-alive connections would otherwise schedule their close on a closed loop.
            for connection in list(server.connections):
                if connection.transport is not None:
                    connection.transport.abort()
            loop.run_until_complete(server.after_stop())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=serve, name="whatsapp-channel", daemon=True)
        self._thread.start()
        assert ready.wait(20), "the channel's server did not start"
        return self

    def idle(self, timeout: float = 10.0) -> None:
        """Wait until every queued message was handled and its replies sent."""
        future = asyncio.run_coroutine_threadsafe(self.channel.queues.idle(), self.loop)
        future.result(timeout)

    def stop(self, *, forget_pending: bool = True) -> None:
        """Stop serving. Messages whose turn failed stay pending in the shared test database,
        where the next test's channel (or Rasa) would take them up: forgotten, unless asked."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(20)
        database = self.channel._database
        if forget_pending and database is not None:
            try:
                database.run(lambda cur: cur.execute(
                    "UPDATE whatsapp_seen_messages SET retry_at = NULL, message = NULL WHERE retry_at IS NOT NULL"))
            except Exception:  # noqa: BLE001 - a test whose database is unreachable on purpose
                pass


class FileServer:
    """Serves one PDF at /certificates/<token>.pdf, as the action server does."""

    def __init__(self, content: bytes, filename: str = "sertifikat-vaksin-dosis-2.pdf"):
        self.content, self.filename, self.hits = content, filename, 0
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                outer.paths.append(self.path)
                if not self.path.startswith("/certificates/"):
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pdf")
                self.send_header("Content-Disposition", f'inline; filename="{outer.filename}"')
                self.send_header("Content-Length", str(len(outer.content)))
                self.end_headers()
                self.wfile.write(outer.content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        """What the channel's PUBLIC_BASE_URL or CERTIFICATE_INTERNAL_BASE_URL is set to."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def link(self, token: str = TOKEN) -> str:
        return f"{self.base}/certificates/{token}.pdf"

    def stop(self) -> None:
        self.server.shutdown()


__all__ = ["APP_SECRET", "CITIZEN", "ChannelServer", "FileServer", "OTHER", "PAYLOADS", "Rasa",
           "TOKEN", "VERIFY_TOKEN", "certificate_message", "free_port", "messages_of", "new_wamid", "payload"]
