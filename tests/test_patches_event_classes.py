"""rasa_server/patches/event_classes.py: every event name resolves to Rasa's class."""

from __future__ import annotations

import pytest
from rasa.shared.core import events
from rasa.shared.core.events import SlotSet
from rasa.shared.utils.common import all_subclasses

from rasa_server import patches

ORIGINAL_RESOLVE = events.Event.resolve_by_type


@pytest.fixture(scope="module")
def installed():
    patches.install(["event_classes"])
    yield
    patches.uninstall()


def test_every_event_type_resolves_to_the_same_class(installed):
    names = {cls.type_name for cls in all_subclasses(events.Event)}
    assert len(names) > 20
    for name in names:
        assert events.Event.resolve_by_type(name) is ORIGINAL_RESOLVE(name)
    assert events.Event.resolve_by_type("no such event", default=SlotSet) is SlotSet
    with pytest.raises(ValueError):
        events.Event.resolve_by_type("no such event")
