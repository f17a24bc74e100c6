"""Work done only for debug log lines, done only when they are logged.

Replaces `RulePolicy.format_tracker_states` (a static method RulePolicy inherits from Policy; set
on RulePolicy) and the `copy` module attribute of the modules in DEBUG_COPY_MODULES.
Why: at every prediction the RulePolicy formats the whole conversation's states into text for a
debug line; and Rasa deep-copies the events of every action, the parse of every message, the
AugmentedMemoizationPolicy's states and more, only to hand the copies to structlog debug lines
(the arguments are made before structlog drops the line). Both are made only when the module
logs at debug level. In each module of DEBUG_COPY_MODULES every use of `copy` is such a deep
copy (tests/test_patches_debug_copies.py reads their source to check it).
Rasa internals touched: `RulePolicy.format_tracker_states`, the module globals `copy` of
rasa.core.processor, rasa.core.actions.forms, rasa.core.policies.rule_policy and
rasa.core.policies.memoization.
"""

from __future__ import annotations

import copy
import importlib
import logging
from typing import Any, Optional

from rasa_server.patches import patch

DEBUG_COPY_MODULES = ("rasa.core.processor", "rasa.core.actions.forms", "rasa.core.policies.rule_policy",
                      "rasa.core.policies.memoization")


class CopyForDebugLogs:
    """The copy module as one of DEBUG_COPY_MODULES sees it: its deep copies are made only when
    that module's debug lines are logged."""

    def __init__(self, module: str) -> None:
        self._logger = logging.getLogger(module)

    def deepcopy(self, value: Any, memo: Optional[dict] = None) -> Any:
        if self._logger.isEnabledFor(logging.DEBUG):
            return copy.deepcopy(value, memo)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def install() -> None:
    from rasa.core.policies import rule_policy

    debug_log = logging.getLogger(rule_policy.__name__)
    original = rule_policy.RulePolicy.format_tracker_states

    def format_tracker_states(states: list[dict]) -> str:
        return original(states) if debug_log.isEnabledFor(logging.DEBUG) else ""

    patch(rule_policy.RulePolicy, "format_tracker_states", staticmethod(format_tracker_states))
    for name in DEBUG_COPY_MODULES:
        patch(importlib.import_module(name), "copy", CopyForDebugLogs(name))
