"""rasa_server/patches/tracker_replays.py: kept folds and replays give Rasa's applied events and copies."""

from __future__ import annotations

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from patches_support import every_kind_of_event, everything_of
from rasa_server import patches
from rasa_server.patches import tracker_replays
from tools.stack import ROOT

ORIGINAL_COPY = DialogueStateTracker.copy


ORIGINAL_APPLIED = DialogueStateTracker.applied_events


@pytest.fixture(scope="module")
def installed():
    patches.install(["tracker_replays"])
    yield
    patches.uninstall()


def test_tracker_copies_for_actions_are_rasas_copies(installed):
    """While an action runs, every copy of the tracker is what Rasa's replay of all events
    makes, whatever was done to the copies handed out before; outside of actions, Rasa copies."""
    from rasa.shared.core.events import ActionExecutionRejected, ActiveLoop, FollowupAction, LoopInterrupted, Restarted

    domain = Domain.load(str(ROOT / "domain.yml"))
    script = [
        ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
        UserUttered("cek status", {"name": "check_vaccination_status", "confidence": 1.0}),
        ActionExecuted("status_form"), ActiveLoop("status_form"), SlotSet("requested_slot", "phone_number"),
        ActionExecuted("action_listen"), UserUttered("apa itu booster?", {"name": "faq", "confidence": 1.0}),
        ActionExecutionRejected("status_form"), LoopInterrupted(True), ActionExecuted("utter_faq"),
        ActionExecuted("status_form"), LoopInterrupted(False), SlotSet("phone_number", "+6281234567001"),
        BotUttered("Kode sudah dikirim", {"buttons": []}), FollowupAction("action_show_status"),
        ActionExecuted("action_show_status"), ActiveLoop(None), ActionExecuted("action_listen"),
        UserUttered("mulai lagi", {"name": "restart", "confidence": 1.0}), ActionExecuted("action_restart"),
        Restarted(), ActionExecuted("action_listen"),
    ]
    tracker = DialogueStateTracker("kept-replays", domain.slots)
    tracker.model_id = "model-1"  # set by the processor, not by an event: copies do not carry it
    token = tracker_replays.RUNNING_AN_ACTION.set(True)
    try:
        for i, event in enumerate(script):
            tracker.update(event, domain)
            tracker.clear_followup_action() if i == 17 else None  # as the processor does, without an event
            ours = tracker.copy()
            assert everything_of(ours) == everything_of(ORIGINAL_COPY(tracker)), i
            ours.update(SlotSet("phone_number", "dirusak"))  # what an action may do to its copy
            ours.update(LoopInterrupted(True))  # changes the active loop in place
            ours.update(ActionExecuted("action_listen"))  # replaces the latest action
            assert everything_of(tracker.copy()) == everything_of(ORIGINAL_COPY(tracker)), i
        behind = DialogueStateTracker("kept-replays", domain.slots)  # the same conversation, other events
        behind.update_with_events(script[:5], domain)
        assert everything_of(behind.copy()) == everything_of(ORIGINAL_COPY(behind))
    finally:
        tracker_replays.RUNNING_AN_ACTION.reset(token)
    assert everything_of(tracker.copy()) == everything_of(ORIGINAL_COPY(tracker))


def test_kept_folds_are_rasas_applied_events_after_every_event_of_every_kind(installed):
    """After each event of every_kind_of_event(), with another conversation in between: the
    applied events are the very events Rasa's fold keeps."""
    domain = Domain.load(str(ROOT / "domain.yml"))
    tracker = DialogueStateTracker("kept-folds", domain.slots)
    for i, event in enumerate(every_kind_of_event()):
        tracker.update(event, domain)
        assert [id(e) for e in tracker.applied_events()] == [id(e) for e in ORIGINAL_APPLIED(tracker)], i
        if i % 5 == 0:
            assert DialogueStateTracker("someone-else", domain.slots).applied_events() == []
