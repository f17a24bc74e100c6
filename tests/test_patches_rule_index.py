"""rasa_server/patches/rule_index.py: the rules found through the index are Rasa's."""

from __future__ import annotations

import pytest
from rasa.core.policies.rule_policy import RulePolicy
from rasa.shared.core.trackers import DialogueStateTracker

from patches_support import every_kind_of_event, load_agent, predictions_over_a_conversation, rule_policy_of
from rasa_server import patches

ORIGINAL_POSSIBLE_KEYS = RulePolicy._get_possible_keys


@pytest.fixture(scope="module")
def installed():
    patches.install(["rule_index"])
    yield
    patches.uninstall()


@pytest.fixture(scope="module")
def agent():
    return load_agent()


def test_rules_found_through_the_index_are_rasas(installed, agent, monkeypatch):
    """The rules that apply after every event of every_kind_of_event(), from the states made
    on the intent and on the text, in both of the model's lookups: Rasa's set, with no more
    checks; and the predictions over a conversation are Rasa's, with a quarter of the checks."""
    policy = rule_policy_of(agent)
    checks = []
    is_applicable = RulePolicy._is_rule_applicable

    def counted(self, *args):
        checks.append(args[1])  # the turn looked back at
        return is_applicable(self, *args)

    monkeypatch.setattr(RulePolicy, "_is_rule_applicable", counted)
    tracker = DialogueStateTracker("index", agent.domain.slots)
    compared = matched = 0
    for event in every_kind_of_event():
        tracker.update(event, agent.domain)
        for use_text in (False, True):
            states = policy._prediction_states(tracker, agent.domain, use_text,
                                               rule_only_data=policy._get_rule_only_data())
            for lookup in policy.lookup.values():
                if not isinstance(lookup, dict):
                    continue
                checks.clear()
                expected = ORIGINAL_POSSIBLE_KEYS(policy, lookup, states)
                rasas_checks = len(checks)
                checks.clear()
                assert policy._get_possible_keys(lookup, states) == expected
                assert len(checks) <= rasas_checks
                compared, matched = compared + 1, matched + bool(expected)
    assert compared > 150 and matched > 20

    with monkeypatch.context() as rasas_way:
        rasas_way.setattr(RulePolicy, "_get_possible_keys", ORIGINAL_POSSIBLE_KEYS)
        checks.clear()
        expected = predictions_over_a_conversation(agent)
        rasas_checks = len(checks)
    checks.clear()
    assert predictions_over_a_conversation(agent) == expected
    assert len(checks) < rasas_checks / 4
