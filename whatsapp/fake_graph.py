"""A stand-in for Meta's side of WhatsApp on loopback, for tests and for trying the channel.

A fake Graph API that records what the assistant sends and answers as Meta does, and a phone
that sends signed webhooks in Meta's shapes.

Used by the tests, and by hand to try the channel without a Meta app:

    python -m whatsapp.fake_graph --port 8089 --webhook http://127.0.0.1:5005/webhooks/whatsapp/webhook

prints the WHATSAPP_* settings to give Rasa, then reads lines typed as a citizen's messages
("#2" taps the second button or row of the last choice the assistant offered). Reusable: the
server runs in its own thread, `listeners` hear every accepted message (for a future browser
simulator), and failures can be scripted with `fail_next`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from aiohttp import web

from .inbound import SIGNATURE_HEADER, sign

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
                 host: str = "127.0.0.1", port: int = 0):
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.host = host
        self.port = port
        self.requests: list[Recorded] = []
        self.media: dict[str, Media] = {}
        self.listeners: list[Callable[[dict], None]] = []
        self._failures: list[ScriptedFailure] = []
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
            runner = web.AppRunner(self._app(), access_log=None)
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

    # -- the server -----------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_post("/{version}/{phone}/messages", self._messages)
        app.router.add_post("/{version}/{phone}/media", self._upload)
        app.router.add_get("/{version}/{media_id}", self._media_info)
        app.router.add_get("/media-download/{media_id}", self._media_download)
        return app

    def _record(self, recorded: Recorded, status: int, answer: Any) -> web.Response:
        recorded.status, recorded.answer = status, answer
        with self._lock:
            self.requests.append(recorded)
            self._lock.notify_all()
        if status == 200 and isinstance(recorded.json, dict):
            for listener in list(self.listeners):
                try:
                    listener(recorded.json)
                except Exception:  # noqa: BLE001 - a listener's trouble is not the sender's
                    pass
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
        problem = problem_with(payload, self.media)
        if problem is not None:
            return self._record(recorded, 400, graph_error(131009, "Parameter value is not valid", problem))
        to = str(payload["to"]).lstrip("+")
        answer = {"messaging_product": "whatsapp", "contacts": [{"input": payload["to"], "wa_id": to}],
                  "messages": [{"id": f"wamid.FAKE{next(self._ids):08d}{secrets.token_hex(6).upper()}"}]}
        return self._record(recorded, 200, answer)

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


# --- by hand --------------------------------------------------------------------------------

def render(message: dict) -> str:
    """A bot message as a terminal shows it."""
    kind = message.get("type")
    if kind == "text":
        return message["text"]["body"]
    if kind == "interactive":
        interactive = message["interactive"]
        lines = [interactive["body"]["text"]]
        if interactive["type"] == "button":
            options = [b["reply"] for b in interactive["action"]["buttons"]]
        else:
            options = [r for s in interactive["action"]["sections"] for r in s["rows"]]
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

    fake = FakeGraph(port=args.port).start()
    last_options: list[dict] = []

    def show(message: dict) -> None:
        nonlocal last_options
        if message.get("type") == "interactive":
            action = message["interactive"]["action"]
            last_options = ([b["reply"] for b in action["buttons"]] if "buttons" in action
                            else [r for s in action["sections"] for r in s["rows"]])
        print("\n" + "\n".join("bot> " + line for line in render(message).splitlines()), flush=True)

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
            if line.startswith("#") and line[1:].isdigit() and 0 < int(line[1:]) <= len(last_options):
                option = last_options[int(line[1:]) - 1]
                kind = list_reply if "description" in option or len(last_options) > 3 else button_reply
                message = kind(args.wa_id, option["id"], option["title"])
            else:
                message = text(args.wa_id, line)
            try:
                reply = post_webhook(args.webhook, webhook([message]), args.app_secret)
                if reply.status_code != 200:
                    print(f"(webhook answered {reply.status_code}: {reply.text[:200]})")
            except requests.RequestException as exc:
                print(f"(webhook not reachable: {exc})")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
