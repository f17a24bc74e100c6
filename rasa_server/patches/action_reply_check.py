"""The check of every custom action's reply, compiled once.

Replaces `RemoteAction._validate_action_result` (private), which calls
`jsonschema.validate(result, RemoteAction.action_response_format_spec())` for every reply.
Why: that call first validates the schema itself against the metaschema, every time; it tries
each event against a `oneOf` of 23 event schemas (all of them, building error objects for the
22 that fail); and jsonschema interprets the schema for every value. Here each schema is
compiled once by fastjsonschema, and each event is checked against the one schema its `event`
name selects: each of the 23 requires its own constant name, so oneOf holds exactly when that
one does. A reply that fails goes through Rasa's own check, for Rasa's verdict and error.
Rasa internals touched: `RemoteAction._validate_action_result`,
`RemoteAction.action_response_format_spec()`'s layout (`properties.events.items.oneOf`, each
with `properties.event.const`).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from rasa_server.patches import patch


def install() -> None:
    import fastjsonschema
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction

    spec = RemoteAction.action_response_format_spec()
    validator_for(spec).check_schema(spec)
    without_one_of = copy.deepcopy(spec)
    event_schemas = without_one_of["properties"]["events"]["items"].pop("oneOf")
    by_name = {schema["properties"]["event"]["const"]: fastjsonschema.compile(schema) for schema in event_schemas}
    if len(by_name) != len(event_schemas):
        raise RuntimeError("two event schemas share a name: the oneOf shortcut does not hold")
    check = fastjsonschema.compile(without_one_of)
    original = RemoteAction._validate_action_result

    @functools.wraps(original)
    def validate(self: RemoteAction, result: dict[str, Any]) -> bool:
        try:
            check(result)
            for event in result.get("events") or ():
                # An object with a string "event" here: the schema without oneOf requires it.
                by_name[event["event"]](event)
        except (fastjsonschema.JsonSchemaException, KeyError):
            return original(self, result)  # Rasa's own path, for its verdict and error message
        return True

    patch(RemoteAction, "_validate_action_result", validate)
