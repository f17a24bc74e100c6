"""rasa_server/patches/debug_copies.py: work for debug lines done only when they are logged."""

from __future__ import annotations

import logging

import pytest
from rasa.core.policies.rule_policy import RulePolicy

from rasa_server import patches
from rasa_server.patches import debug_copies

ORIGINAL_FORMAT = RulePolicy.format_tracker_states  # Policy's, which RulePolicy inherits


@pytest.fixture(scope="module")
def installed():
    patches.install(["debug_copies"])
    yield
    patches.uninstall()


def test_rule_states_are_formatted_for_debug_logs_only(installed, caplog):
    states = [{"user": {"intent": "greet"}, "prev_action": {"action_name": "action_listen"}}]
    assert RulePolicy.format_tracker_states(states) == ""
    with caplog.at_level(logging.DEBUG, logger="rasa.core.policies.rule_policy"):
        assert RulePolicy.format_tracker_states(states) == ORIGINAL_FORMAT(states)
        assert "user intent: greet" in RulePolicy.format_tracker_states(states)


def test_copies_for_debug_logs_are_made_only_when_logged(installed, caplog):
    """In each module whose copies are left to debug logging, every use of the copy module is a
    deep copy inside a structlogger.debug(...) call; those copies are made when the module logs
    at debug level, and not otherwise."""
    import ast
    import importlib
    import inspect

    for name in debug_copies.DEBUG_COPY_MODULES:
        module = importlib.import_module(name)
        tree = ast.parse(inspect.getsource(module))
        debug_calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                       and ast.unparse(node.func) == "structlogger.debug"]
        inside = {id(sub) for call in debug_calls for sub in ast.walk(call)}
        uses = [node for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "copy"]
        assert uses, name
        for use in uses:
            assert use.attr == "deepcopy" and id(use) in inside, (name, use.lineno)
        value = {"a": [1, 2]}
        with caplog.at_level(logging.INFO, logger=name):
            assert module.copy.deepcopy(value) is value
        with caplog.at_level(logging.DEBUG, logger=name):
            copied = module.copy.deepcopy(value)
            assert copied == value and copied is not value and copied["a"] is not value["a"]
