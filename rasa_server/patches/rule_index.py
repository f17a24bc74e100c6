"""The RulePolicy's rules indexed by their last state.

Replaces `RulePolicy._get_possible_keys` (private).
Why: to find the rules that apply, the RulePolicy checks every rule against the conversation's
newest state, then the rules left against each older state back to the conversation's start,
twice per user message (once on its text, once on its intent). Here:
- the newest state is checked only against the rules that can match it: a rule whose last state
  names a previous action or an intent cannot match a state with another one (Rasa's own check
  fails on that value), so each lookup is indexed once by those two names;
- the older states are checked only as far back as the longest rule left reaches: a rule with
  fewer states than the turns looked back passes those checks unchecked.
The check itself is Rasa's (`_is_rule_applicable`); a newest state with no previous action (a
conversation's first) is checked against every rule, as Rasa does.
Rasa internals touched: `RulePolicy._get_possible_keys`, `_is_rule_applicable`,
`_rule_key_to_state` (all private), the state keys PREVIOUS_ACTION, USER, ACTION_NAME, INTENT
and SHOULD_NOT_BE_SET.
"""

from __future__ import annotations

from typing import Optional

from rasa_server.patches import patch


def install() -> None:
    from rasa.core.policies.rule_policy import RulePolicy
    from rasa.shared.core.constants import PREVIOUS_ACTION, SHOULD_NOT_BE_SET, USER
    from rasa.shared.nlu.constants import ACTION_NAME, INTENT

    def required(state: dict, part: str, name: str) -> Optional[str]:
        value = state.get(part, {}).get(name)
        return value if value and value != SHOULD_NOT_BE_SET else None

    def index(lookup: dict) -> tuple[dict, dict]:
        buckets: dict[tuple, list] = {}
        lengths = {}
        for key in lookup:
            states = RulePolicy._rule_key_to_state(key)
            lengths[key] = len(states)
            last = states[-1]
            buckets.setdefault((required(last, PREVIOUS_ACTION, ACTION_NAME), required(last, USER, INTENT)),
                               []).append(key)
        return buckets, lengths

    indexes: dict[int, tuple[dict, dict, dict]] = {}  # id(lookup) -> (lookup, buckets, lengths)

    def _get_possible_keys(self, lookup: dict, states: list) -> set:
        found = indexes.get(id(lookup))
        if found is None or found[0] is not lookup or len(found[2]) != len(lookup):
            found = indexes[id(lookup)] = (lookup, *index(lookup))
        _, buckets, lengths = found
        if not states:
            return set(lookup)
        newest = states[-1]
        if newest.get(PREVIOUS_ACTION):
            action, intent = newest[PREVIOUS_ACTION].get(ACTION_NAME), newest.get(USER, {}).get(INTENT)
            candidates = [key for pair in {(action, intent), (action, None), (None, intent), (None, None)}
                          for key in buckets.get(pair, ())]
        else:
            candidates = list(lookup)
        possible = {key for key in candidates if self._is_rule_applicable(key, 0, newest)}
        for i in range(1, len(states)):
            if not possible or i >= max(lengths[key] for key in possible):
                break
            possible = {key for key in possible if self._is_rule_applicable(key, i, states[-1 - i])}
        return possible

    patch(RulePolicy, "_get_possible_keys", _get_possible_keys)
