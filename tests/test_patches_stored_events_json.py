"""rasa_server/patches/stored_events_json.py and rasa_server/jsonio.py: the body sent to the action
server is the JSON of Rasa's dict, with the stored events' JSON reused."""

from __future__ import annotations

import asyncio
import json

import pytest
from rasa.core.actions.action import RemoteAction
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SlotSet
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from rasa.utils.endpoints import EndpointConfig

from conftest import make_store
from patches_support import every_kind_of_event
from rasa_server import jsonio, patches
from rasa_server.patches import stored_events_json
from tools.stack import ROOT

ORIGINAL_ACTION_CALL_FORMAT = RemoteAction._action_call_format


@pytest.fixture(scope="module")
def installed():
    patches.install(["stored_events_json"])
    yield
    patches.uninstall()


@pytest.fixture
def store(database_url):
    store = make_store(database_url)
    yield store
    store.dispose()


def test_json_written_for_rasa_reads_back_as_json_dumps_would():
    value = {"sender_id": "x", "tracker": {"events": [
        {"event": "bot", "text": "Sertifikat · ✓ siap", "confidence": 0.1 + 0.2, "data": {1: "a", True: None}},
        {"event": "slot", "name": "big", "value": 2**70}]}, "nan_free": [1.5e-7, -0.0, 10**18]}
    written = jsonio.dumps(value)
    assert json.loads(written) == json.loads(json.dumps(value))


def test_action_calls_send_stored_events_as_stored_and_the_same_json_as_rasa(installed, store, database_url):
    """After each event of every_kind_of_event(), saved and read back now and then (from the
    store's memory and from the database): the body sent to the action server is the JSON of
    Rasa's dict, with and without the domain. Events Rasa stamped anew after they were stored are
    written anew; a body orjson cannot write goes Rasa's way."""
    import orjson

    domain = Domain.load(str(ROOT / "domain.yml"))
    endpoint = EndpointConfig("http://127.0.0.1:9", enable_selective_domain=True)
    actions = [RemoteAction("action_show_status", endpoint), RemoteAction("validate_status_form", endpoint)]
    run = asyncio.run
    sender = "speedups-action-calls"
    tracker = DialogueStateTracker(sender, domain.slots)
    tracker.model_id = "model-1"
    reused = 0
    for i, event in enumerate(every_kind_of_event()):
        tracker.update(event, domain)
        if i % 6 == 5:
            run(store.save(tracker))
            if i % 12 == 11:  # read back from the database, by another store
                other = make_store(database_url)
                tracker = run(other.retrieve(sender))
                other.dispose()
            else:
                tracker = run(store.retrieve(sender))
            tracker.model_id = "model-1"
        if i == 20:  # logged once more by Rasa, with a new timestamp: its stored JSON is stale
            stamped = [e for e in tracker.events if jsonio.stored_json(e) is not None][-1]
            stamped.timestamp += 1
            assert jsonio.stored_json(stamped) is None
        reused = max(reused, sum(jsonio.stored_json(e) is not None for e in tracker.events))
        assert stored_events_json.state_without_events(tracker) == tracker.current_state(EventVerbosity.NONE), i
        for action in actions:
            call = action._action_call_format(tracker, domain)
            assert isinstance(call, stored_events_json.ActionCall)
            assert orjson.loads(call.body) == json.loads(json.dumps(ORIGINAL_ACTION_CALL_FORMAT(action, tracker, domain))), i
    assert reused > 20
    tracker.update(SlotSet("dose", 2 ** 70), domain)  # beyond orjson's integers
    call = actions[0]._action_call_format(tracker, domain)
    assert not isinstance(call, stored_events_json.ActionCall)
    assert call == ORIGINAL_ACTION_CALL_FORMAT(actions[0], tracker, domain)
    assert json.loads(jsonio.dumps_bytes(call))["tracker"]["slots"]["dose"] == 2 ** 70
