"""rasa_server/patches/rule_states.py: the RulePolicy's states made once and kept are Rasa's."""

from __future__ import annotations

import pytest
from rasa.core.featurizers.tracker_featurizers import TrackerFeaturizer
from rasa.core.policies.rule_policy import RulePolicy
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker

from patches_support import every_kind_of_event, load_agent, predictions_over_a_conversation
from rasa_server import patches
from rasa_server.patches import rule_states, tracker_replays
from tools.stack import ROOT

ORIGINAL_RULE_PREDICT = RulePolicy._predict


ORIGINAL_CREATE_STATES = TrackerFeaturizer.__dict__["_create_states"]


ORIGINAL_APPLIED = DialogueStateTracker.applied_events


@pytest.fixture(scope="module")
def installed():
    patches.install(["rule_states"])
    yield
    patches.uninstall()


@pytest.fixture(scope="module")
def agent():
    return load_agent()


def test_rule_states_computed_once_and_kept_give_the_same_predictions(installed, agent):
    patched = RulePolicy._predict, TrackerFeaturizer.__dict__["_create_states"]
    try:
        RulePolicy._predict, TrackerFeaturizer._create_states = ORIGINAL_RULE_PREDICT, ORIGINAL_CREATE_STATES
        twice = predictions_over_a_conversation(agent)
    finally:
        RulePolicy._predict, TrackerFeaturizer._create_states = patched
    once = predictions_over_a_conversation(agent)
    assert once == twice
    # The RulePolicy decides every turn but a yes or no when nothing was asked: stories
    # (data/stories/general.yml) that the AugmentedMemoizationPolicy predicts.
    not_ruled = [turn[0]["intent"]["name"] for turn in once if turn[2][1] != "RulePolicy"]
    assert set(not_ruled) <= {"affirm", "deny"} and len(not_ruled) <= 2
    assert "affirm" in not_ruled  # "ya"


def test_kept_rule_states_are_rasas_after_every_event_of_every_kind(monkeypatch):
    """After each event of every_kind_of_event(), and between two trackers of one conversation:
    the applied events and the states are those Rasa makes from the start."""
    monkeypatch.setattr(DialogueStateTracker, "applied_events", ORIGINAL_APPLIED)  # Rasa's, as reference
    domain = Domain.load(str(ROOT / "domain.yml"))
    histories = rule_states.Histories(size=4)
    script = every_kind_of_event()
    tracker = DialogueStateTracker("kept-states", domain.slots)
    other = DialogueStateTracker("kept-states", domain.slots)  # the same conversation, behind
    folds = tracker_replays.Folds(size=4)
    for i, event in enumerate(script):
        tracker.update(event, domain)
        assert [id(e) for e in folds.applied_events(tracker)] == [id(e) for e in ORIGINAL_APPLIED(tracker)], i
        if i % 5 == 0:  # another conversation in between
            assert folds.applied_events(DialogueStateTracker("someone-else", domain.slots)) == []
        assert histories.states(tracker, domain, False) == domain.states_for_tracker_history(tracker), i
        if i % 7 == 0:  # the same conversation's other tracker, a few events behind, in between
            other.update_with_events(script[len(other.events):i - 2] if i > 2 else [], domain)
            assert histories.states(other, domain, False) == domain.states_for_tracker_history(other), i
        assert histories.states(tracker, domain, True) == domain.states_for_tracker_history(
            tracker, omit_unset_slots=True), i
    assert len(histories.kept) <= 4
