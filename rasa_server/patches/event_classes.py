"""Event classes found by name from a map.

Replaces `Event.resolve_by_type` (public static method of rasa.shared.core.events.Event).
Why: turning each stored event into an object (reading a conversation from the tracker store)
walks the whole Event class tree to find the class of that name, for every event. The name ->
class map is kept; a name it does not have is looked up Rasa's way (for Rasa's default or error).
Rasa internals touched: `Event.resolve_by_type`, `rasa.shared.utils.common.all_subclasses`,
each class's `type_name`.
"""

from __future__ import annotations

from typing import Optional

from rasa_server.patches import patch


def install() -> None:
    from rasa.shared.core import events
    from rasa.shared.utils.common import all_subclasses

    original = events.Event.resolve_by_type
    cache: dict[str, type] = {}

    def resolve_by_type(type_name: str, default: Optional[type] = None) -> Optional[type]:
        cls = cache.get(type_name)
        if cls is None:
            for candidate in all_subclasses(events.Event):
                cache.setdefault(candidate.type_name, candidate)
            cls = cache.get(type_name)
        if cls is not None:
            return cls
        return original(type_name, default)

    patch(events.Event, "resolve_by_type", staticmethod(resolve_by_type))
