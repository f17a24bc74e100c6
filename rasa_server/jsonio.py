"""JSON and cache helpers shared by the speed patches (rasa_server/patches/) and the tracker
store: no patch of Rasa here, so importing this module changes nothing in Rasa."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Optional

import orjson

JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+?\+)?json")  # what aiohttp's json() accepts


def keep_last(kept: OrderedDict, key: Any, value: Any, size: int) -> None:
    """kept[key] = value as its newest entry, the oldest dropped beyond `size`: what each of the
    per-conversation caches keeps."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > size:
        kept.popitem(last=False)


def read_json(content_type: str, content: bytes) -> Any:
    """A reply's body as Rasa's EndpointConfig.request reads it through aiohttp's json(): None
    unless the type is JSON or if it is blank; decoded with its charset (UTF-8 by default).
    orjson reads what it can, to the same values; what it refuses (NaN, integers beyond 64 bits)
    goes to json.loads as before."""
    content_type = content_type.lower()
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


def dumps(value: Any) -> str:
    """JSON text, as json.dumps writes it for what Rasa sends, written by orjson (compact, UTF-8
    rather than \\u escapes: the same JSON to a reader)."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    """dumps() as UTF-8 bytes. Keys that are not strings and numpy values are rare: orjson's
    options for them (which slow it down) are used only when plain orjson refuses a value; what
    orjson refuses even then (an integer beyond 64 bits, say) goes to json.dumps."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value).encode()


# An event's JSON as the tracker store wrote it (or read it), kept on the event with the
# timestamp it had then: Rasa gives an event a new timestamp when it logs one that a form had
# put on a temporary copy of the conversation first, and that must not be sent stale.
_STORED_JSON = "_json_as_stored"


def remember_json(event: Any, text: str) -> None:
    """The event's JSON as stored (by the tracker store), for the calls to the action server
    that send it again (rasa_server/patches/stored_events_json.py)."""
    event.__dict__[_STORED_JSON] = (event.timestamp, text)


def stored_json(event: Any) -> Optional[str]:
    kept = event.__dict__.get(_STORED_JSON)
    if kept is None or kept[0] != event.timestamp:
        return None
    return kept[1]
