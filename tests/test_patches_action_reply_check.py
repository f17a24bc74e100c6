"""rasa_server/patches/action_reply_check.py: the compiled check gives Rasa's verdict and error."""

from __future__ import annotations

import copy

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from rasa.shared.core import events
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered

from rasa_server import patches

ORIGINAL_VALIDATE = RemoteAction._validate_action_result


@pytest.fixture(scope="module")
def installed():
    patches.install(["action_reply_check"])
    yield
    patches.uninstall()


GOOD_REPLIES = [
    {"events": [], "responses": []},
    {"events": [{"event": "slot", "name": "phone_number", "value": "x", "timestamp": None}],
     "responses": [{"response": "utter_ask_otp_code"}, {"text": "halo", "buttons": []}]},
    {"events": [{"event": "active_loop", "name": None}]},
]


BAD_REPLIES = [
    {"events": "not a list"},
    {"events": [{"name": "no event type"}]},
    {"responses": "x"},
]


@pytest.mark.parametrize("reply", GOOD_REPLIES)
def test_valid_action_replies_pass_as_before(installed, reply):
    action = RemoteAction("action_x", None)
    assert ORIGINAL_VALIDATE(action, reply) is True
    assert action._validate_action_result(reply) is True


@pytest.mark.parametrize("reply", BAD_REPLIES)
def test_invalid_action_replies_fail_as_before(installed, reply):
    action = RemoteAction("action_x", None)
    with pytest.raises(ValidationError) as before:
        ORIGINAL_VALIDATE(action, copy.deepcopy(reply))
    with pytest.raises(ValidationError) as after:
        action._validate_action_result(copy.deepcopy(reply))
    assert after.value.message == before.value.message


SAMPLE_EVENTS = [
    UserUttered("halo", {"name": "greet", "confidence": 0.9},
                [{"entity": "nik", "value": "x", "start": 0, "end": 1}],
                parse_data={"intent": {"name": "greet", "confidence": 0.9}, "entities": [],
                            "intent_ranking": [{"name": "greet", "confidence": 0.9}], "text": "halo"}),
    BotUttered("hai", {"buttons": [{"title": "Ya", "payload": "/affirm"}]}),
    ActionExecuted("action_listen"),
    SlotSet("persons", [{"id": 1, "name": "Budi"}]),
    SlotSet("otp_code", None),
    SessionStarted(),
    events.ActiveLoop("verify_form"),
    events.ActiveLoop(None),
    events.FollowupAction("action_x"),
    events.Restarted(),
    events.AllSlotsReset(),
    events.ActionExecutionRejected("action_x"),
    events.LoopInterrupted(True),
    events.ReminderScheduled("EXTERNAL_x", __import__("datetime").datetime(2026, 1, 1)),
    events.ReminderCancelled(name="r"),
    events.ConversationPaused(),
    events.ConversationResumed(),
    events.EntitiesAdded([{"entity": "dose", "value": "2"}]),
]


def _mutations(event: dict):
    """Each event as Rasa writes it, then spoiled in ways the schema catches (or lets by)."""
    yield event
    for key, value in event.items():
        if key == "event":
            yield {**event, "event": "no_such_event"}
            yield {**event, "event": 7}
            continue
        for wrong in (7, "x", None, [], {"a": 1}, True):
            yield {**event, key: wrong}
        yield {k: v for k, v in event.items() if k != key}
    yield {**event, "extra": {"nested": [1]}}


def test_event_checks_give_rasas_verdict_on_every_kind_of_event(installed):
    action = RemoteAction("action_x", None)
    verdicts = {True: 0, False: 0}
    for sample in SAMPLE_EVENTS:
        for event in _mutations(sample.as_dict()):
            for reply in ({"events": [event]}, {"events": [SlotSet("a", 1).as_dict(), event]}):
                try:
                    expected = ORIGINAL_VALIDATE(action, copy.deepcopy(reply))
                except ValidationError:
                    expected = False
                try:
                    got = action._validate_action_result(copy.deepcopy(reply))
                except ValidationError:
                    got = False
                assert got == expected, reply
                verdicts[expected] += 1
    assert verdicts[True] > 100 and verdicts[False] > 100  # both verdicts well exercised
