"""The AugmentedMemoizationPolicy's recall skipped when nothing can match.

Wraps `AugmentedMemoizationPolicy.recall`.
Why: when the conversation's last turns match no story, the policy (issue 17) tries ever
shorter pasts of it, replaying the tracker for each (`_recall_using_truncation`): most of its
cost, for the predictions that match nothing. Every shorter past keeps the last action, and
after action_listen the message's intent; a prediction whose last state ends no remembered key
in them cannot be recalled, so it is not tried (None, as Rasa's recall would find). Replaces
the former MEMOIZATION_SKIP=0 switch: leave `memoization_skip` out of RASA_PATCHES.
Rasa internals touched: `AugmentedMemoizationPolicy.recall`, `MemoizationPolicy.lookup` and
the format of its keys (states as sorted JSON without quotes, zlib + base64 when
`enable_feature_string_compression`), `policy.config`.
"""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any, Optional

from rasa_server.patches import patch

MEMORY_LAST_ACTION = re.compile(r"prev_action: \{action_name: ([^,}]+)\}")
MEMORY_INTENT = re.compile(r"user: \{[^}]*?intent: ([^,}]+)")


def memory_key_end(key: str, compressed: bool) -> tuple[Optional[str], Optional[str]]:
    """The last action and intent of the last state of a MemoizationPolicy lookup key. States
    are separated by "}, {", which a state itself never contains."""
    text = zlib.decompress(base64.b64decode(key)).decode("utf-8") if compressed else key
    last = text[text.rfind("}, {") + 3:] if "}, {" in text else text[1:]
    action, intent = MEMORY_LAST_ACTION.search(last), MEMORY_INTENT.search(last)
    return (action.group(1) if action else None), (intent.group(1) if intent else None)


def install() -> None:
    from rasa.core.policies.memoization import AugmentedMemoizationPolicy
    from rasa.shared.core.constants import ACTION_LISTEN_NAME

    original = AugmentedMemoizationPolicy.recall

    def key_ends(policy: Any) -> tuple[set, set]:
        """The last actions of the remembered keys, and the intents after action_listen (None
        among them when a key has none: then the intent filters nothing)."""
        ends = policy.__dict__.get("_speedup_key_ends")
        if ends is None or ends[0] is not policy.lookup:
            compressed = policy.config.get("enable_feature_string_compression", False)
            found = [memory_key_end(key, compressed) for key in policy.lookup]
            actions = {action for action, _ in found}
            after_listen = {intent for action, intent in found if action == ACTION_LISTEN_NAME}
            ends = (policy.lookup, actions, after_listen)
            policy.__dict__["_speedup_key_ends"] = ends
        return ends[1], ends[2]

    def recall(self, states, tracker, domain, rule_only_data):
        last = states[-1] if states else {}
        action = (last.get("prev_action") or {}).get("action_name")
        intent = (last.get("user") or {}).get("intent")
        if action is not None:
            actions, after_listen = key_ends(self)
            if action not in actions:
                return None
            if action == ACTION_LISTEN_NAME and None not in after_listen and intent not in after_listen:
                return None
        return original(self, states, tracker, domain, rule_only_data)

    patch(AugmentedMemoizationPolicy, "recall", recall)
