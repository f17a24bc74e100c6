"""The RulePolicy's states made once per prediction, and kept between predictions.

Wraps `TrackerFeaturizer._create_states` (private static method) and `RulePolicy._predict`
(private).
Why: the RulePolicy predicts from the states of the whole conversation. To predict after a user
message it makes them twice (once to look for a rule on the message's text, once on its
intent; the two differ only in what is then removed from the last state), and Rasa makes them
at every prediction from the start: it replays the applied events into a new tracker and reads
a state before each action. Here the states are made once per prediction and each caller gets
its own copy; and per conversation (REPLAY_CACHE_SIZE of them, default 512; 0 keeps nothing
between predictions) what the last prediction made is kept (Histories), the replay going on
with the applied events that are new. Where applied events were taken out (a form's turn folded
into its previous run, an undo) it restarts from the last copy kept before an `action_listen`
at or before the first change; a tracker whose earlier events are other objects starts from the
beginning, as Rasa does. Rasa's own computation is kept for every other use (training;
rule-only turns ignored).
Rasa internals touched: `TrackerFeaturizer._create_states`, `RulePolicy._predict`,
`Domain._clean_state` (private), `Domain.get_active_state`, `DialogueStateTracker.init_copy`,
`applied_events`, `update`, `_max_event_history`, `is_rule_tracker`; it repeats
`Domain.states_for_tracker_history` over `generate_all_prior_trackers`.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from typing import Any, Optional

from rasa_server.jsonio import keep_last
from rasa_server.patches import patch
from rasa_server.patches.tracker_replays import replay_cache_size, same_prefix, snapshot


def install() -> None:
    rule_states_incrementally(replay_cache_size())


class _History:
    """What is kept of one conversation's states between predictions (see Histories)."""

    __slots__ = ("replayed", "replay", "states", "checkpoints")

    def __init__(self) -> None:
        self.replayed: list = []  # the applied events `replay` went through
        self.replay: Any = None
        self.states: list = []  # before each action of `replayed`, then after its last event
        self.checkpoints: list[tuple[int, Any, int]] = []  # (position, replay there, states before)


class Histories:
    """Per conversation (`size` of them), the states the last prediction made and the replay
    they were read from, extended by the new applied events (see the module's docstring);
    tests/test_patches_rule_states.py compares the states with Rasa's after every kind of event."""

    CHECKPOINTS = 3  # kept per conversation,
    WINDOW = 16  # among the last applied events: a form's turn folds away only the latest ones

    def __init__(self, size: int) -> None:
        self.size = size
        self.kept: OrderedDict[tuple, _History] = OrderedDict()

    def states(self, tracker: Any, domain: Any, omit_unset_slots: bool) -> list:
        from rasa.shared.core.constants import ACTION_LISTEN_NAME
        from rasa.shared.core.events import ActionExecuted

        key = (tracker.sender_id, id(domain), omit_unset_slots, tracker.is_rule_tracker,
               tracker._max_event_history)
        history = self.kept.pop(key, None) or _History()
        applied = tracker.applied_events()
        same = same_prefix(history.replayed, applied)
        if history.replay is not None and same == len(history.replayed):
            replay, states, start = history.replay, history.states[:-1], same
        else:
            usable = [c for c in history.checkpoints if c[0] <= same]
            if usable:  # taken out: the replay goes on from there, and is kept again there
                start, replay, before = usable.pop()
                states = history.states[:before]
            else:
                replay, states, start = tracker.init_copy(), [], 0
            history.checkpoints = usable
        # Domain.states_for_tracker_history without rule-only turns to ignore (the RulePolicy's
        # case), over tracker.generate_all_prior_trackers(), from `start` on.
        for position in range(start, len(applied)):
            event = applied[position]
            if isinstance(event, ActionExecuted):
                if event.action_name == ACTION_LISTEN_NAME and position >= len(applied) - self.WINDOW:
                    history.checkpoints.append((position, snapshot(replay), len(states)))
                    del history.checkpoints[:-self.CHECKPOINTS]
                states.append(domain._clean_state(domain.get_active_state(replay, omit_unset_slots)))
            replay.update(event)
        states.append(domain._clean_state(domain.get_active_state(replay, omit_unset_slots)))
        history.replayed, history.replay, history.states = applied, replay, states  # a list of its own
        keep_last(self.kept, key, history, self.size)
        return states


def _copy_states(states: list) -> list:
    """States are dicts of dicts of immutable values; the callers delete keys at the second
    level, so a copy of two levels is theirs."""
    return [{k: dict(v) if isinstance(v, dict) else v for k, v in state.items()} for state in states]


def rule_states_incrementally(size: int) -> None:
    """The RulePolicy's states, within one prediction computed once, across predictions of a
    conversation extended by the new events only (Histories; size 0: within one prediction only)."""
    from rasa.core.featurizers.tracker_featurizers import TrackerFeaturizer
    from rasa.core.policies.rule_policy import RulePolicy

    memo: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("rule_states", default=None)
    histories = Histories(size)
    create_states = TrackerFeaturizer._create_states
    predict = RulePolicy._predict

    def _create_states(tracker, domain, omit_unset_slots=False, ignore_rule_only_turns=False,
                       rule_only_data=None):
        found = memo.get()
        if found is None:
            return create_states(tracker, domain, omit_unset_slots, ignore_rule_only_turns, rule_only_data)
        # The tracker and domain live through the prediction, so their ids stay theirs; the rule
        # data is built anew by each caller: keyed by its content (lists of names).
        rule_only = tuple((k, tuple(v)) for k, v in sorted(rule_only_data.items())) if rule_only_data else None
        key = (id(tracker), len(tracker.events), id(domain), omit_unset_slots, ignore_rule_only_turns, rule_only)
        if key not in found:
            if ignore_rule_only_turns or size <= 0:
                found[key] = create_states(tracker, domain, omit_unset_slots, ignore_rule_only_turns, rule_only_data)
            else:  # rule_only_data matters only where rule-only turns are ignored
                found[key] = histories.states(tracker, domain, omit_unset_slots)
        return _copy_states(found[key])

    def _predict(self, tracker, domain):
        token = memo.set({})
        try:
            return predict(self, tracker, domain)
        finally:
            memo.reset(token)

    patch(TrackerFeaturizer, "_create_states", staticmethod(_create_states))
    patch(RulePolicy, "_predict", _predict)
