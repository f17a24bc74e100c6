"""The simulator's server: the fake Graph API of simulator.fake_graph with the chat page on top.

One aiohttp server plays Meta for the channel (the Graph API routes of FakeGraph; the citizen's
messages delivered to the channel's webhook, signed) and serves the page that plays the phone:

    GET  /                                  the page (simulator/static/)
    GET  /sim/static/<file>                 its CSS and JavaScript
    GET  /sim/api/config                    the business, the demo citizens' numbers, the outbox path
    GET  /sim/api/chats/<wa_id>/events      server-sent events: the chat, each new entry, the outbox
    POST /sim/api/chats/<wa_id>/messages    {"text": ...} or {"reply": {"type", "id", "title", "context"}}
    POST /sim/api/chats/<wa_id>/reset       a new conversation
    GET  /sim/api/chats/<wa_id>/outbox      the development outbox's messages for that number
    GET  /sim/media/<media_id>              a document the assistant uploaded, for the page's link
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import os
import re
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from simulator.fake_graph import ChatEntry, FakeGraph, button_reply, list_reply, text

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
BUSINESS_NAME = "Asisten Sertifikat Vaksin"
WA_ID = r"{wa_id:\d{5,20}}"
MAX_TEXT = 4096
OUTBOX_LIMIT = 20
OUTBOX_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
_CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")
# The page serves every number's OTP outbox and lets anyone write as anyone, without a login:
# it listens beyond loopback only when this is set to 1.
ALLOW_REMOTE = "SIMULATOR_ALLOW_REMOTE"


class RemoteHostRefused(ValueError):
    """The simulator was asked to listen on an address other machines can reach."""


def is_loopback(host: str) -> bool:
    """Whether every address `host` stands for is a loopback one ("" and 0.0.0.0 are not)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_listen_host(host: str, env: dict | None = None, *, warn: bool = True) -> None:
    """Refuse a host beyond loopback unless SIMULATOR_ALLOW_REMOTE=1; warn when it is allowed."""
    if is_loopback(host):
        return
    if ((os.environ if env is None else env).get(ALLOW_REMOTE) or "").strip() != "1":
        raise RemoteHostRefused(
            f"the simulator serves every number's OTP codes without a login, so it listens only on "
            f"loopback (127.0.0.1, ::1, localhost), not on {host or 'every interface'!r}; "
            f"set {ALLOW_REMOTE}=1 to allow it on a network you trust")
    if warn:
        log.warning("the simulator listens on %r, beyond loopback (%s=1): anyone who reaches it reads "
                    "every number's OTP codes", host or "every interface", ALLOW_REMOTE)

# What each demo account is good for trying (README's table), in the designers' language.
DEMO_HINTS = {
    "6281234567001": "Akun keluarga: pilih orangnya. Budi punya dosis 1, 2 dan booster.",
    "6281234567002": "Dua dosis; booster sudah waktunya.",
    "6281234567003": "Nama salah tulis: coba Ubah Info Diri → nama.",
    "6281234567004": "Belum ada data vaksinasi: coba lapor \"sertifikat belum muncul\".",
    "6281234567005": "Dosis 2 tercatat, sertifikat masih diproses.",
    "6281234567006": "Orang yang sama dengan 0812-3456-7004, terdaftar dua kali: di sini vaksinasinya.",
}


def demo_numbers() -> list[dict]:
    """The seeded demo accounts: number, the people on it, what to try."""
    from backend.seed import DEMO_ACCOUNTS  # the one list of demo citizens

    numbers = []
    for phone, people in DEMO_ACCOUNTS:
        wa_id = phone.lstrip("+")
        numbers.append({"wa_id": wa_id, "display": display_number(wa_id),
                        "names": [person[1] for person in people], "hint": DEMO_HINTS.get(wa_id, "")})
    return numbers


def display_number(wa_id: str) -> str:
    """6281234567001 -> 0812-3456-7001, as Indonesians write their numbers; others as +digits."""
    if wa_id.startswith("62") and 9 <= len(wa_id) <= 15:
        local = "0" + wa_id[2:]
        return "-".join([local[:4], local[4:8], local[8:]]).strip("-")
    return "+" + wa_id


def outbox_messages(path: Path, wa_id: str, limit: int = OUTBOX_LIMIT) -> list[dict]:
    """The development sender's lines ({"to", "text", "sent_at"}) to this number, newest last."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being written, or not ours
        if not isinstance(row, dict) or str(row.get("to", "")).lstrip("+") != wa_id:
            continue
        body = str(row.get("text", ""))
        code = _CODE.search(body)
        found.append({"to": str(row["to"]), "text": body, "sent_at": str(row.get("sent_at", "")),
                      "code": code.group(0) if code else None})
    return found[-limit:]


class RasaConversations:
    """Starts a conversation afresh through Rasa's HTTP API (`rasa run --enable-api --auth-token`)."""

    def __init__(self, base_url: str, token: str, timeout: float = 20.0):
        self.base_url, self.token, self.timeout = base_url.rstrip("/"), token, timeout

    def restart(self, conversation_id: str) -> None:
        # The verified session ends as after "selesai" (the project's own action, so the backend
        # forgets it too), then the tracker starts over: slots, forms and history.
        steps = ((f"/conversations/{conversation_id}/execute", {"name": "action_end_session"}),
                 (f"/conversations/{conversation_id}/tracker/events", {"event": "restart"}))
        for path, body in steps:
            reply = requests.post(self.base_url + path, params={"token": self.token}, json=body,
                                  timeout=self.timeout)
            if reply.status_code != 200:
                raise RuntimeError(f"Rasa answered {reply.status_code} to {path.rsplit('/', 1)[-1]}")


class Simulator(FakeGraph):
    """FakeGraph plus the page; `rasa` (optional) lets "new conversation" reset Rasa's side too."""

    def __init__(self, *, outbox: Path, rasa: RasaConversations | None = None, env: dict | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        check_listen_host(self.host, env)  # before anything listens
        self.outbox = Path(outbox)
        self.rasa = rasa
        self.demo = demo_numbers()
        self._names = {d["wa_id"]: d["names"][0] for d in self.demo if d["names"]}
        self._streams: set[asyncio.Queue] = set()

    # -- routes ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_static("/sim/static/", STATIC)
        app.router.add_get("/sim/api/config", self._config)
        app.router.add_get(f"/sim/api/chats/{WA_ID}/events", self._events)
        app.router.add_post(f"/sim/api/chats/{WA_ID}/messages", self._send)
        app.router.add_post(f"/sim/api/chats/{WA_ID}/reset", self._reset)
        app.router.add_get(f"/sim/api/chats/{WA_ID}/outbox", self._outbox)
        app.router.add_get(r"/sim/media/{media_id:\d+}", self._media_file)
        app.on_shutdown.append(self._close_streams)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response({"business": {"name": BUSINESS_NAME},
                                  "demo": self.demo, "outbox": str(self.outbox),
                                  "rasa_reset": self.rasa is not None})

    # -- the chat ---------------------------------------------------------------------------

    def entry_json(self, entry: ChatEntry) -> dict:
        data = asdict(entry)
        document = entry.message.get("document") if entry.direction == "out" else None
        if isinstance(document, dict) and str(document.get("id", "")) in self.media:
            media = self.media[str(document["id"])]
            data["media"] = {"url": f"/sim/media/{document['id']}", "size": len(media.content),
                             "mime_type": media.mime_type}
        return data

    async def _send(self, request: web.Request) -> web.Response:
        wa_id = request.match_info["wa_id"]
        try:
            body = await request.json()
        except ValueError:
            body = None
        message = self._message_from(wa_id, body if isinstance(body, dict) else {})
        if message is None:
            return web.json_response({"error": "Pesan kosong atau tidak dikenal."}, status=400)
        deliver = functools.partial(self.deliver, message, name=self._names.get(wa_id, "Warga"))
        try:
            # requests blocks: not on this loop, which must stay free to take the replies.
            reply = await asyncio.get_running_loop().run_in_executor(None, deliver)
        except requests.RequestException as exc:
            return web.json_response({"error": f"Webhook tidak dapat dihubungi ({type(exc).__name__})."},
                                     status=502)
        except RuntimeError:
            return web.json_response({"error": "Webhook belum diatur."}, status=503)
        if reply.status_code != 200:
            return web.json_response({"error": f"Webhook menjawab HTTP {reply.status_code}."}, status=502)
        return web.json_response({"status": reply.status_code})

    @staticmethod
    def _message_from(wa_id: str, body: dict) -> dict | None:
        words = body.get("text")
        if isinstance(words, str) and words.strip():
            return text(wa_id, words.strip()[:MAX_TEXT])
        reply = body.get("reply")
        if not isinstance(reply, dict):
            return None
        option_id, title = str(reply.get("id") or ""), str(reply.get("title") or "")
        context = str(reply.get("context") or "") or None
        if not option_id or not title:
            return None
        if reply.get("type") == "button_reply":
            return button_reply(wa_id, option_id, title, context=context)
        if reply.get("type") == "list_reply":
            return list_reply(wa_id, option_id, title, str(reply.get("description") or ""), context=context)
        return None

    async def _reset(self, request: web.Request) -> web.Response:
        wa_id = request.match_info["wa_id"]
        problem = None
        if self.rasa is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.rasa.restart, wa_id)
            except (requests.RequestException, RuntimeError) as exc:
                problem = f"Rasa tidak dapat memulai ulang percakapan: {exc}"
        self.forget(wa_id)
        return web.json_response({"rasa": "restarted" if self.rasa and not problem else "untouched",
                                  "problem": problem})

    async def _outbox(self, request: web.Request) -> web.Response:
        return web.json_response({"path": str(self.outbox),
                                  "messages": outbox_messages(self.outbox, request.match_info["wa_id"])})

    async def _media_file(self, request: web.Request) -> web.Response:
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return web.Response(status=404, text="Dokumen tidak ditemukan.")
        return web.Response(body=media.content, content_type=media.mime_type.split(";")[0],
                            headers={"Content-Disposition": f'inline; filename="{media.filename}"',
                                     "Cache-Control": "no-store"})

    # -- server-sent events ------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """The whole chat first (the page draws it afresh on every (re)connect), then each new
        or changed entry as it happens, and the outbox whenever its lines for this number change."""
        wa_id = request.match_info["wa_id"]
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                             "X-Accel-Buffering": "no"})
        await stream.prepare(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def hear(entry: ChatEntry) -> None:
            if entry.wa_id == wa_id:
                loop.call_soon_threadsafe(queue.put_nowait, entry)

        # Listening before the snapshot: an entry may come twice, never not at all (the page
        # keeps one bubble per seq).
        self.listeners.append(hear)
        self._streams.add(queue)
        try:
            await self._write(stream, "snapshot", {"entries": [self.entry_json(e) for e in self.chat(wa_id)]},
                              retry=1000)
            outbox_seen: list[dict] | None = None
            stamp: tuple[int, int] | None = None
            idle = 0.0
            while True:
                new_stamp = self._outbox_stamp()
                if new_stamp != stamp:
                    stamp = new_stamp
                    messages = outbox_messages(self.outbox, wa_id)
                    if messages != outbox_seen:
                        outbox_seen = messages
                        await self._write(stream, "outbox", {"path": str(self.outbox), "messages": messages})
                try:
                    entry = await asyncio.wait_for(queue.get(), OUTBOX_POLL_SECONDS)
                except asyncio.TimeoutError:
                    idle += OUTBOX_POLL_SECONDS
                    if idle >= KEEPALIVE_SECONDS:  # finds closed connections; keeps proxies open
                        idle = 0.0
                        await stream.write(b": keepalive\n\n")
                    continue
                if entry is None:  # the server is stopping
                    break
                idle = 0.0
                await self._write(stream, "entry", self.entry_json(entry))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(queue)
            if hear in self.listeners:
                self.listeners.remove(hear)
        return stream

    @staticmethod
    async def _write(stream: web.StreamResponse, event: str, data: Any, retry: int | None = None) -> None:
        head = f"retry: {retry}\n" if retry else ""
        await stream.write(f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())

    def _outbox_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.outbox.stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    async def _close_streams(self, app: web.Application) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)
