"""A stand-in for Meta's side of WhatsApp on loopback: the one fake the tests and the simulator share.

A fake Graph API that records what the assistant sends and answers as Meta does; Meta's delivery
of the citizen's messages to the channel's webhook, signed as Meta signs them; the chat each
number sees (both directions, with each reply's latency); and `Phone`, a citizen typing and
tapping. The browser simulator (simulator/) is this class with a page on top.

Used by the tests, and by hand to try the channel without a Meta app or a browser:

    python -m simulator.fake_graph --port 8089 --webhook http://127.0.0.1:5005/webhooks/whatsapp/webhook

prints the WHATSAPP_* settings to give Rasa, then reads lines typed as a citizen's messages
("#2" taps the second button or row of the last choice the assistant offered). The server runs
in its own thread, `listeners` hear every chat entry, subclasses add routes with `add_routes`,
and failures can be scripted with `fail_next`. `Limits` makes it answer as Meta does under
load (the benchmark's `--channel whatsapp`): a latency per send, the number's throughput and the
per-recipient pair rate, refused with 429 and Meta's error codes 130429 and 131056.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from aiohttp import web

from whatsapp.inbound import SIGNATURE_HEADER, sign

DEFAULT_TOKEN = "fake-access-token"
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_DISPLAY_NUMBER = "15550783881"
DEFAULT_WABA_ID = "102290129340398"


@dataclass
class Recorded:
    """One request the fake received, and what it answered."""
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # name: (filename, type, bytes)
    status: int = 200
    answer: Any = None
    at: float = field(default_factory=time.time)


@dataclass
class ChatEntry:
    """One line of a number's chat as its phone shows it.

    direction "in": the citizen's message (`message` is the webhook message object, `status` what
    the channel's webhook answered, None while under way); "out": the assistant's (`message` is the
    Graph API payload, `latency` the seconds since the citizen's last message); "reset": the chat
    was cleared for a new conversation.
    """
    seq: int
    wa_id: str
    direction: str
    message: dict
    at: float
    wamid: str = ""
    latency: float | None = None
    status: int | None = None
    arrived: float | None = None  # "out": when the request reached the fake, before its latency


@dataclass
class Media:
    content: bytes
    mime_type: str
    filename: str


@dataclass
class ScriptedFailure:
    status: int
    code: int
    title: str
    path_contains: str
    retry_after: str | None = None


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; take() spends one if there is one."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class Limits:
    """Meta's limits on sending, as this fake models them (docs/performance.md, "The WhatsApp
    path under load"). Throughput: messages a second for the business number, a bucket holding
    one second's worth (Meta's default 80; the plan's number needs the 1,000 tier). Pair rate:
    one message every 6 s to one recipient, bursts of up to 45 (Meta: "about 1 message every 6 s",
    bursts allowed then paid back). Each /messages and /media answer comes after a latency drawn
    uniformly between latency_min and latency_max seconds, refusals included. 0 turns a limit off."""
    throughput_per_s: float = 0.0
    pair_per_s: float = 0.0
    pair_burst: float = 45.0
    latency_min: float = 0.0
    latency_max: float = 0.0


THROUGHPUT_ERROR = (130429, "Rate limit hit", "Cloud API message throughput has been reached.")
PAIR_RATE_ERROR = (131056, "(Business Account, Consumer Account) pair rate limit hit",
                   "Message failed to send because there were too many messages sent from this phone "
                   "number to the same phone number in a short period of time.")


def graph_error(code: int, message: str, details: str = "", kind: str = "OAuthException") -> dict:
    """Meta's error body."""
    error: dict[str, Any] = {"message": f"(#{code}) {message}", "type": kind, "code": code,
                             "fbtrace_id": "A" + secrets.token_urlsafe(16)}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


def problem_with(payload: Any, media: dict[str, Media]) -> str | None:
    """Why Meta would refuse this message (error 131009, "Parameter value is not valid"), or None."""
    if not isinstance(payload, dict) or payload.get("messaging_product") != "whatsapp":
        return "messaging_product must be whatsapp"
    to = str(payload.get("to") or "").lstrip("+")
    if not to.isdigit() or not 5 <= len(to) <= 20:
        return "to must be a phone number"
    kind = payload.get("type", "text")
    body = payload.get(kind)
    if not isinstance(body, dict):
        return f"{kind} object missing"
    if kind == "text":
        text = body.get("body")
        if not isinstance(text, str) or not 1 <= len(text) <= 4096:
            return "text.body must be 1-4096 characters"
    elif kind == "interactive":
        return _interactive_problem(body)
    elif kind in ("document", "image", "audio", "video", "sticker"):
        if not body.get("id") and not body.get("link"):
            return f"{kind} needs id or link"
        if body.get("id") and str(body["id"]) not in media:
            return f"unknown media id {body['id']}"
        if len(str(body.get("caption", ""))) > 1024:
            return "caption longer than 1024 characters"
    elif kind == "template":
        if not body.get("name") or not isinstance(body.get("language"), dict) or not body["language"].get("code"):
            return "template needs name and language.code"
    else:
        return f"unsupported message type {kind}"
    return None


def _interactive_problem(interactive: dict) -> str | None:
    text = (interactive.get("body") or {}).get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= 1024:
        return "interactive body.text must be 1-1024 characters"
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return "interactive button: 1-3 buttons"
        replies = [b.get("reply") or {} for b in buttons]
        for reply in replies:
            if not 1 <= len(str(reply.get("title", ""))) <= 20:
                return "button title must be 1-20 characters"
            if not 1 <= len(str(reply.get("id", ""))) <= 256:
                return "button id must be 1-256 characters"
        if len({r["title"] for r in replies}) < len(replies) or len({r["id"] for r in replies}) < len(replies):
            return "button titles and ids must be unique"
    elif interactive.get("type") == "list":
        if not 1 <= len(str(action.get("button", ""))) <= 20:
            return "list button must be 1-20 characters"
        sections = action.get("sections")
        if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
            return "list: 1-10 sections"
        rows = [row for s in sections for row in (s.get("rows") or [])]
        if not 1 <= len(rows) <= 10:
            return "list: 1-10 rows in all"
        for row in rows:
            if not 1 <= len(str(row.get("title", ""))) <= 24:
                return "row title must be 1-24 characters"
            if len(str(row.get("description", ""))) > 72:
                return "row description must be at most 72 characters"
            if not 1 <= len(str(row.get("id", ""))) <= 200:
                return "row id must be 1-200 characters"
        if len({r["id"] for r in rows}) < len(rows):
            return "row ids must be unique"
    else:
        return f"unsupported interactive type {interactive.get('type')}"
    return None


class FakeGraph:
    """The Graph API endpoints the channel uses, on 127.0.0.1, in a thread of its own."""

    def __init__(self, *, access_token: str = DEFAULT_TOKEN, phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
                 host: str = "127.0.0.1", port: int = 0, webhook_url: str = "", app_secret: str = "",
                 limits: Limits | None = None):
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.host = host
        self.port = port
        # Where Meta delivers the citizens' messages, and the app secret it signs them with.
        self.webhook_url = webhook_url
        self.app_secret = app_secret
        self.requests: list[Recorded] = []
        self.media: dict[str, Media] = {}
        self.chats: dict[str, list[ChatEntry]] = {}
        self.listeners: list[Callable[[ChatEntry], None]] = []
        self._failures: list[ScriptedFailure] = []
        self.limits = limits or Limits()
        self.refused: Counter = Counter()  # Meta's error code -> how many /messages answers carried it
        self._throughput = TokenBucket(self.limits.throughput_per_s, max(1.0, self.limits.throughput_per_s))
        self._pairs: dict[str, TokenBucket] = {}
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._last_in: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address such as ::1
        return f"http://{host}:{self.port}"

    def env(self, app_secret: str, verify_token: str) -> dict[str, str]:
        """The settings that point the channel at this fake."""
        return {"WHATSAPP_API_BASE_URL": self.base_url, "WHATSAPP_ACCESS_TOKEN": self.access_token,
                "WHATSAPP_PHONE_NUMBER_ID": self.phone_number_id, "WHATSAPP_APP_SECRET": app_secret,
                "WHATSAPP_VERIFY_TOKEN": verify_token}

    def start(self) -> "FakeGraph":
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            # A short shutdown: open event streams of the simulator are closed, not waited for.
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=2.0)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, self.port)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failed.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            # Handlers of connections still open end here rather than as "Task was destroyed".
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-graph", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> "FakeGraph":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- scripting and reading ------------------------------------------------------------

    def fail_next(self, status: int, code: int = 131000, title: str = "Something went wrong", *,
                  times: int = 1, path_contains: str = "/messages", retry_after: str | None = None) -> None:
        """The next `times` requests whose path contains `path_contains` get this error."""
        with self._lock:
            self._failures += [ScriptedFailure(status, code, title, path_contains, retry_after)] * times

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    def sent(self, to: str | None = None) -> list[dict]:
        """The messages accepted (answered 200), in order, optionally only those to one number."""
        with self._lock:
            return [r.json for r in self.requests
                    if r.path.endswith("/messages") and r.status == 200
                    and (to is None or str(r.json.get("to", "")).lstrip("+") == to.lstrip("+"))]

    def wait_for_sent(self, count: int, to: str | None = None, timeout: float = 10.0) -> list[dict]:
        """Block until at least `count` messages were accepted (to `to`); returns them all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = self.sent(to)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} messages arrived: {found}")
                self._lock.wait(left)

    def quiet_for(self, seconds: float) -> None:
        """Wait until no request arrived for `seconds` (to be sure nothing more comes)."""
        while True:
            with self._lock:
                count = len(self.requests)
            time.sleep(seconds)
            with self._lock:
                if len(self.requests) == count:
                    return

    # -- the citizen's side: Meta delivering their messages, the chat their phone shows -------

    def deliver(self, message: dict, *, name: str = "Warga", timeout: float = 10.0) -> requests.Response:
        """Deliver one message of a citizen (built with `text`, `button_reply`, ...) to the
        channel's webhook, signed as Meta signs it; it enters that number's chat first, so the
        latency of the replies counts from the moment the webhook was called."""
        if not self.webhook_url:
            raise RuntimeError("FakeGraph.webhook_url is not set: where should Meta deliver?")
        entry = self._add_entry(str(message.get("from", "")), "in", message, wamid=str(message.get("id", "")))
        try:
            reply = post_webhook(self.webhook_url, webhook([message], names={entry.wa_id: name}),
                                 self.app_secret or None, timeout=timeout)
        except requests.RequestException:
            self._update_entry(entry, status=0)
            raise
        self._update_entry(entry, status=reply.status_code)
        return reply

    def verify_webhook(self, verify_token: str, timeout: float = 10.0) -> bool:
        """Meta's handshake when a webhook is saved: GET with a challenge that must come back."""
        challenge = str(secrets.randbelow(10**9))
        reply = requests.get(self.webhook_url, timeout=timeout, params={
            "hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge})
        return reply.status_code == 200 and reply.text == challenge

    def chat(self, wa_id: str) -> list[ChatEntry]:
        """What the phone of `wa_id` shows, oldest first (a copy)."""
        with self._lock:
            return list(self.chats.get(wa_id.lstrip("+"), []))

    def forget(self, wa_id: str) -> ChatEntry:
        """Clear the chat of `wa_id` (a new conversation); listeners hear a "reset" entry."""
        wa_id = wa_id.lstrip("+")
        with self._lock:
            self.chats.pop(wa_id, None)
            self._last_in.pop(wa_id, None)
        return self._add_entry(wa_id, "reset", {})

    def phone(self, wa_id: str, name: str = "Warga") -> "Phone":
        return Phone(self, wa_id, name)

    def _add_entry(self, wa_id: str, direction: str, message: dict, **fields: Any) -> ChatEntry:
        with self._lock:
            entry = ChatEntry(next(self._seq), wa_id, direction, message, time.time(), **fields)
            if direction == "in":
                self._last_in[wa_id] = entry.at
            elif direction == "out" and wa_id in self._last_in:
                entry.latency = entry.at - self._last_in[wa_id]
            self.chats.setdefault(wa_id, []).append(entry)
            self._lock.notify_all()
        self._tell(entry)
        return entry

    def _update_entry(self, entry: ChatEntry, **fields: Any) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(entry, key, value)
        self._tell(entry)

    def _tell(self, entry: ChatEntry) -> None:
        for listener in list(self.listeners):
            try:
                listener(entry)
            except Exception:  # noqa: BLE001 - a listener's trouble is not the sender's
                pass

    # -- the server -----------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """For subclasses (the simulator): routes registered before the Graph API's."""

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        self.add_routes(app)
        # Versions as Meta writes them (v23.0), so that other first segments stay free.
        version = r"{version:v\d+(?:\.\d+)?}"
        app.router.add_post(f"/{version}/{{phone}}/messages", self._messages)
        app.router.add_post(f"/{version}/{{phone}}/media", self._upload)
        app.router.add_get(f"/{version}/{{media_id}}", self._media_info)
        app.router.add_get("/media-download/{media_id}", self._media_download)
        return app

    def _record(self, recorded: Recorded, status: int, answer: Any) -> web.Response:
        recorded.status, recorded.answer = status, answer
        with self._lock:
            self.requests.append(recorded)
            self._lock.notify_all()
        if status == 200 and recorded.path.endswith("/messages") and isinstance(recorded.json, dict):
            wamid = answer["messages"][0]["id"]
            self._add_entry(str(recorded.json.get("to", "")).lstrip("+"), "out", recorded.json, wamid=wamid,
                            arrived=recorded.at)
        return web.json_response(answer, status=status)

    def _scripted(self, path: str) -> ScriptedFailure | None:
        with self._lock:
            for i, failure in enumerate(self._failures):
                if failure.path_contains in path:
                    return self._failures.pop(i)
        return None

    def _refusal(self, request: web.Request, phone: str | None) -> tuple[int, dict] | None:
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return 401, graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        if phone is not None and phone != self.phone_number_id:
            return 400, graph_error(100, f"Unsupported post request. Object with ID '{phone}' does not exist",
                                    kind="GraphMethodException")
        failure = self._scripted(request.path)
        if failure is not None:
            return failure.status, graph_error(failure.code, failure.title, failure.title)
        return None

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        recorded = Recorded(request.method, request.path, dict(request.headers), json=payload)
        refusal = self._refusal(request, request.match_info["phone"])
        if refusal is not None:
            return self._record(recorded, *refusal)
        await self._latency()
        limited = self._limited(payload)
        if limited is not None:
            return self._record(recorded, 429, graph_error(*limited))
        problem = problem_with(payload, self.media)
        if problem is not None:
            return self._record(recorded, 400, graph_error(131009, "Parameter value is not valid", problem))
        to = str(payload["to"]).lstrip("+")
        answer = {"messaging_product": "whatsapp", "contacts": [{"input": payload["to"], "wa_id": to}],
                  "messages": [{"id": f"wamid.FAKE{next(self._ids):08d}{secrets.token_hex(6).upper()}"}]}
        return self._record(recorded, 200, answer)

    async def _latency(self) -> None:
        if self.limits.latency_max > 0:
            await asyncio.sleep(random.uniform(self.limits.latency_min, self.limits.latency_max))

    def _limited(self, payload: Any) -> tuple[int, str, str] | None:
        """Meta's code, title and details when a limit refuses this message, else None. The
        number's throughput is spent first: a message refused for the pair rate still counted."""
        with self._lock:
            if self.limits.throughput_per_s > 0 and not self._throughput.take():
                self.refused[THROUGHPUT_ERROR[0]] += 1
                return THROUGHPUT_ERROR
            to = str(payload.get("to", "")).lstrip("+") if isinstance(payload, dict) else ""
            if self.limits.pair_per_s > 0 and to:
                bucket = self._pairs.get(to)
                if bucket is None:
                    bucket = self._pairs[to] = TokenBucket(self.limits.pair_per_s, self.limits.pair_burst)
                if not bucket.take():
                    self.refused[PAIR_RATE_ERROR[0]] += 1
                    return PAIR_RATE_ERROR
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        recorded = Recorded(request.method, request.path, dict(request.headers))
        try:
            form = await request.post()
        except ValueError:
            form = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                recorded.files[name] = (value.filename, value.content_type, value.file.read())
            else:
                recorded.form[name] = str(value)
        refusal = self._refusal(request, request.match_info["phone"])
        if refusal is not None:
            return self._record(recorded, *refusal)
        await self._latency()
        if recorded.form.get("messaging_product") != "whatsapp" or "file" not in recorded.files:
            return self._record(recorded, 400, graph_error(100, "Invalid parameter",
                                                           "messaging_product and file are required"))
        filename, content_type, content = recorded.files["file"]
        mime_type = recorded.form.get("type") or content_type
        media_id = str(1000000000000000 + next(self._ids))
        self.media[media_id] = Media(content, mime_type, filename)
        return self._record(recorded, 200, {"id": media_id})

    async def _media_info(self, request: web.Request) -> web.Response:
        recorded = Recorded(request.method, request.path, dict(request.headers))
        refusal = self._refusal(request, None)
        if refusal is not None:
            return self._record(recorded, *refusal)
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return self._record(recorded, 400, graph_error(100, "Invalid parameter", "unknown media id"))
        media_id = request.match_info["media_id"]
        return self._record(recorded, 200, {
            "messaging_product": "whatsapp", "id": media_id, "mime_type": media.mime_type,
            "file_size": len(media.content), "url": f"{self.base_url}/media-download/{media_id}"})

    async def _media_download(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return web.json_response(graph_error(190, "Invalid OAuth access token"), status=401)
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return web.Response(status=404)
        return web.Response(body=media.content, content_type=media.mime_type.split(";")[0])


# --- the citizen's side: webhook payloads in Meta's shapes --------------------------------------

_wamids = itertools.count(1)


def new_wamid() -> str:
    return f"wamid.HBgN{secrets.token_hex(10).upper()}{next(_wamids):06d}"


def _message(wa_id: str, kind: str, content: dict | None, wamid: str | None, timestamp: int | None,
             context: str | None = None) -> dict:
    message: dict[str, Any] = {"from": wa_id, "id": wamid or new_wamid(),
                               "timestamp": str(timestamp if timestamp is not None else int(time.time())),
                               "type": kind}
    if context:
        message["context"] = {"from": DEFAULT_DISPLAY_NUMBER, "id": context}
    if content is not None:
        message[kind] = content
    return message


def text(wa_id: str, body: str, *, wamid: str | None = None, timestamp: int | None = None) -> dict:
    return _message(wa_id, "text", {"body": body}, wamid, timestamp)


def button_reply(wa_id: str, button_id: str, title: str, *, wamid: str | None = None,
                 timestamp: int | None = None, context: str | None = None) -> dict:
    return _message(wa_id, "interactive", {"type": "button_reply",
                                           "button_reply": {"id": button_id, "title": title}},
                    wamid, timestamp, context or new_wamid())


def list_reply(wa_id: str, row_id: str, title: str, description: str = "", *, wamid: str | None = None,
               timestamp: int | None = None, context: str | None = None) -> dict:
    reply = {"id": row_id, "title": title}
    if description:
        reply["description"] = description
    return _message(wa_id, "interactive", {"type": "list_reply", "list_reply": reply},
                    wamid, timestamp, context or new_wamid())


def template_button(wa_id: str, payload: str, label: str, *, wamid: str | None = None,
                    timestamp: int | None = None) -> dict:
    return _message(wa_id, "button", {"payload": payload, "text": label}, wamid, timestamp, new_wamid())


def sticker(wa_id: str, *, wamid: str | None = None, timestamp: int | None = None) -> dict:
    return _message(wa_id, "sticker", {"mime_type": "image/webp", "sha256": secrets.token_hex(16),
                                       "id": str(1000 + next(_wamids)), "animated": False}, wamid, timestamp)


def location(wa_id: str, *, wamid: str | None = None, timestamp: int | None = None) -> dict:
    return _message(wa_id, "location", {"latitude": -6.2, "longitude": 106.8, "name": "Monas",
                                        "address": "Jakarta Pusat"}, wamid, timestamp)


def reaction(wa_id: str, to_wamid: str, emoji: str = "👍", *, wamid: str | None = None) -> dict:
    return _message(wa_id, "reaction", {"message_id": to_wamid, "emoji": emoji}, wamid, None)


def status(recipient: str, wamid: str, state: str = "delivered", *, error: tuple[int, str] | None = None) -> dict:
    entry: dict[str, Any] = {"id": wamid, "status": state, "timestamp": str(int(time.time())),
                             "recipient_id": recipient}
    if error:
        entry["errors"] = [{"code": error[0], "title": error[1], "message": error[1],
                            "error_data": {"details": error[1]}}]
    return entry


def webhook(messages: list[dict] = (), statuses: list[dict] = (), *, names: dict[str, str] | None = None) -> dict:
    """One delivery (one entry, one change), as Meta posts it."""
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": DEFAULT_DISPLAY_NUMBER,
                                          "phone_number_id": DEFAULT_PHONE_NUMBER_ID}}
    if messages:
        senders = list(dict.fromkeys(m["from"] for m in messages))
        value["contacts"] = [{"profile": {"name": (names or {}).get(s, "Warga")}, "wa_id": s} for s in senders]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account",
            "entry": [{"id": DEFAULT_WABA_ID, "changes": [{"value": value, "field": "messages"}]}]}


def post_webhook(url: str, payload: Any, app_secret: str | None, *, signature: str | None = None,
                 timeout: float = 10.0) -> requests.Response:
    """POST as Meta does: the JSON body signed with the app secret (unless told otherwise)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    elif app_secret is not None:
        headers[SIGNATURE_HEADER] = sign(app_secret, body)
    return requests.post(url, data=body, headers=headers, timeout=timeout)


def options_of(message: dict) -> list[dict]:
    """The reply buttons or list rows of an interactive Graph API payload ({"id", "title", ...})."""
    if message.get("type") != "interactive":
        return []
    action = message["interactive"].get("action") or {}
    if "buttons" in action:
        return [b["reply"] for b in action["buttons"]]
    return [row for section in action.get("sections", []) for row in section.get("rows", [])]


class Phone:
    """A citizen's WhatsApp: what they type or tap goes through Meta (the fake) to the channel;
    each call returns the Graph API payloads the assistant sent back in that turn."""

    def __init__(self, fake: FakeGraph, wa_id: str, name: str = "Warga"):
        self.fake, self.wa_id, self.name = fake, wa_id.lstrip("+"), name

    def send(self, message: dict, *, timeout: float = 30.0, settle: float = 0.4) -> list[dict]:
        before = len(self.fake.sent(self.wa_id))
        reply = self.fake.deliver(message, name=self.name)
        if reply.status_code != 200:
            raise AssertionError(f"the webhook answered {reply.status_code}: {reply.text[:200]}")
        self.fake.wait_for_sent(before + 1, self.wa_id, timeout=timeout)
        self.fake.quiet_for(settle)  # the rest of this turn's replies (sent back to back)
        return self.fake.sent(self.wa_id)[before:]

    def say(self, words: str, **kwargs: Any) -> list[dict]:
        return self.send(text(self.wa_id, words), **kwargs)

    def last_choice(self) -> ChatEntry | None:
        """The latest interactive message (buttons or a list) the assistant sent this number."""
        return next((e for e in reversed(self.fake.chat(self.wa_id))
                     if e.direction == "out" and options_of(e.message)), None)

    def tap_message(self, title: str) -> dict:
        """The webhook message of tapping the option titled `title` in the latest choice, as
        WhatsApp builds it: a button_reply or list_reply quoting that message."""
        choice = self.last_choice()
        options = options_of(choice.message) if choice else []
        option = next((o for o in options if o["title"] == title), None)
        if option is None:
            raise AssertionError(f"no option {title!r} to tap; offered: {[o['title'] for o in options]}")
        if choice.message["interactive"]["type"] == "list":
            return list_reply(self.wa_id, option["id"], option["title"], option.get("description", ""),
                              context=choice.wamid)
        return button_reply(self.wa_id, option["id"], option["title"], context=choice.wamid)

    def tap(self, title: str, **kwargs: Any) -> list[dict]:
        return self.send(self.tap_message(title), **kwargs)


# --- by hand --------------------------------------------------------------------------------

def render(message: dict) -> str:
    """A bot message as a terminal shows it."""
    kind = message.get("type")
    if kind == "text":
        return message["text"]["body"]
    if kind == "interactive":
        interactive = message["interactive"]
        lines = [interactive["body"]["text"]]
        options = options_of(message)
        if interactive["type"] == "list":
            lines.append(f"[{interactive['action']['button']}]")
        lines += [f"  #{i} {o['title']}" + (f" - {o['description']}" if o.get("description") else "")
                  for i, o in enumerate(options, 1)]
        return "\n".join(lines)
    if kind == "document":
        doc = message["document"]
        return f"[dokumen {doc.get('filename', '')}] {doc.get('caption', '')}"
    if kind == "template":
        params = [p.get("text") for c in message["template"].get("components", []) for p in c.get("parameters", [])]
        return f"[template {message['template']['name']}] {params[0] if params else ''}"
    return json.dumps(message, ensure_ascii=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--webhook", default="http://127.0.0.1:5005/webhooks/whatsapp/webhook")
    parser.add_argument("--app-secret", default="local-app-secret")
    parser.add_argument("--verify-token", default="local-verify-token")
    parser.add_argument("--wa-id", default="6281234567002", help="the citizen's WhatsApp number (digits)")
    args = parser.parse_args()

    fake = FakeGraph(port=args.port, webhook_url=args.webhook, app_secret=args.app_secret).start()
    phone = fake.phone(args.wa_id)

    def show(entry: ChatEntry) -> None:
        if entry.direction == "out":
            print("\n" + "\n".join("bot> " + line for line in render(entry.message).splitlines()), flush=True)

    fake.listeners.append(show)
    print("Fake Graph API on", fake.base_url, "- start Rasa with:")
    for key, value in fake.env(args.app_secret, args.verify_token).items():
        print(f"  export {key}={value}")
    print(f"Type as the citizen {args.wa_id}; '#2' taps the 2nd option; Ctrl-D ends.")
    try:
        while True:
            try:
                line = input().strip()
            except EOFError:
                break
            if not line:
                continue
            choice = phone.last_choice()
            options = options_of(choice.message) if choice else []
            if line.startswith("#") and line[1:].isdigit() and 0 < int(line[1:]) <= len(options):
                message = phone.tap_message(options[int(line[1:]) - 1]["title"])
            else:
                message = text(args.wa_id, line)
            try:
                reply = fake.deliver(message)
                if reply.status_code != 200:
                    print(f"(webhook answered {reply.status_code}: {reply.text[:200]})")
            except requests.RequestException as exc:
                print(f"(webhook not reachable: {exc})")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
