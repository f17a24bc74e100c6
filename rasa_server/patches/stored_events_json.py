"""Calls to the action server written with the events' stored JSON.

Replaces `RemoteAction._action_call_format` (private) by a wrapper around Rasa's own.
Why: each call to the action server (two or three per message) sends the whole conversation,
and Rasa turned every event into a dict and JSON again for every call. The events the tracker
store stored carry the JSON it wrote or read for them (rasa_server.jsonio.remember_json, with
the timestamp they had then); those go into the body as that JSON (orjson.Fragment), only the
others are written anew. The call's tracker state is made without `dataclasses.asdict`'s deep
copy of the active loop's trigger message (the dict is written to JSON at once, so a copy
protects nothing). The dict handed back is Rasa's, its JSON already written (ActionCall.body,
which kept_connections sends as it is); a body orjson cannot write goes Rasa's way.
Rasa internals touched: `RemoteAction._action_call_format`, `tracker.current_state(...)`
replaced by state_without_events(), which reads `DialogueStateTracker._latest_message_data()`
(private), `current_slot_values()`, `followup_action`, `is_paused()`, `active_loop`,
`latest_action`, `get_latest_input_channel()`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import orjson
from rasa.shared.core.constants import ACTIVE_LOOP, FOLLOWUP_ACTION

from rasa_server.jsonio import stored_json
from rasa_server.patches import patch


class ActionCall(dict):
    """Rasa's call to the action server (the same dict), with its JSON written already."""

    body: bytes


def state_without_events(tracker: Any) -> dict[str, Any]:
    """tracker.current_state(EventVerbosity.NONE), the same dict, but the active loop's dict
    holds its trigger message itself rather than a deep copy."""
    loop = tracker.active_loop
    return {
        "sender_id": tracker.sender_id,
        "slots": tracker.current_slot_values(),
        "latest_message": tracker._latest_message_data(),
        "latest_event_time": tracker.events[-1].timestamp if len(tracker.events) > 0 else None,
        FOLLOWUP_ACTION: tracker.followup_action,
        "paused": tracker.is_paused(),
        "events": None,
        "latest_input_channel": tracker.get_latest_input_channel(),
        ACTIVE_LOOP: {field.name: getattr(loop, field.name) for field in dataclasses.fields(loop)} if loop else {},
        "latest_action": tracker.latest_action,
        "latest_action_name": tracker.latest_action_name,
    }


class _NoEvents:
    """A tracker for Rasa's _action_call_format that gives the state already made."""

    def __init__(self, tracker: Any, state: dict[str, Any]) -> None:
        self.sender_id = tracker.sender_id
        self._state = state

    def current_state(self, event_verbosity: Any) -> dict[str, Any]:
        return self._state


def install() -> None:
    from rasa.core.actions.action import RemoteAction

    original = RemoteAction._action_call_format

    @functools.wraps(original)
    def _action_call_format(self: RemoteAction, tracker: Any, domain: Any) -> dict[str, Any]:
        state = state_without_events(tracker)
        events = []
        for event in tracker.events:
            text = stored_json(event)
            events.append(event.as_dict() if text is None else orjson.Fragment(text))
        state["events"] = events
        call = ActionCall(original(self, _NoEvents(tracker, state), domain))
        try:
            call.body = orjson.dumps(call)
        except TypeError:
            return original(self, tracker, domain)
        return call

    patch(RemoteAction, "_action_call_format", _action_call_format)
