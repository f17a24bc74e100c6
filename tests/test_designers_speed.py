"""The AugmentedMemoizationPolicy (issue 17) made cheaper without changing what it predicts:
rasa_server/patches/memoization_skip.py skips recalling when the last state ends no remembered key. Measured
with tools/policy_bench.py (ms per prediction over the test stories, alternately)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rasa_server import patches
from rasa_server.patches import memoization_skip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def agent():
    from rasa.core.agent import Agent

    patches.install()
    yield Agent.load(str(ROOT / "models" / "current.tar.gz"))
    patches.uninstall()


def memoization_of(agent):
    from rasa.core.policies.memoization import AugmentedMemoizationPolicy

    nodes = agent.processor.graph_runner._instantiated_nodes.values()
    return next(node._component for node in nodes if isinstance(node._component, AugmentedMemoizationPolicy))


def original_recall():
    from rasa.core.policies.memoization import AugmentedMemoizationPolicy

    return patches.original(AugmentedMemoizationPolicy, "recall")


def test_every_remembered_key_has_a_last_action(agent):
    policy = memoization_of(agent)
    ends = [memoization_skip.memory_key_end(key, True) for key in policy.lookup]
    # all but the conversation's empty first state "[{}]" (whose next action is action_listen)
    assert len(ends) > 20 and [end for end in ends if end[0] is None] == [(None, None)]
    assert ("utter_booster_timing", "ask_booster_timing") in ends  # the follow-up's key


def test_skipping_what_cannot_match_predicts_what_rasa_predicts(agent, monkeypatch):
    """Over every point of the test stories: the same prediction as Rasa's recall, with fewer
    of its truncated searches."""
    from rasa.core.policies.memoization import AugmentedMemoizationPolicy

    from tools.policy_bench import prefixes

    policy = memoization_of(agent)
    points = prefixes(agent)
    searches = []
    search = AugmentedMemoizationPolicy._recall_using_truncation
    monkeypatch.setattr(AugmentedMemoizationPolicy, "_recall_using_truncation",
                        lambda self, *args, **kwargs: searches.append(1) or search(self, *args, **kwargs))

    def predictions():
        searches.clear()
        found = [policy.predict_action_probabilities(t, agent.domain).probabilities for t in points]
        return found, len(searches)

    fast, fast_searches = predictions()
    with monkeypatch.context() as rasas:
        rasas.setattr(AugmentedMemoizationPolicy, "recall", original_recall())
        slow, slow_searches = predictions()
    assert fast == slow
    assert sum(max(p) > 0 for p in fast) > 30  # it does recall, not only skip
    assert fast_searches < slow_searches / 2, (fast_searches, slow_searches)
