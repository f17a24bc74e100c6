"""rasa_server/patches/: RASA_PATCHES chooses the speed patches; `none` leaves Rasa exactly as it
ships; each topic installs and uninstalls on its own, touching only its own attributes.
(Each topic's behaviour against Rasa's: tests/test_patches_<topic>.py.)"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys

import pytest

from rasa_server import patches
from tools.stack import ROOT

# Every attribute of Rasa (and the modules it uses) each topic replaces: (module, class or None,
# attribute). Written out so that a patch touching anything else fails here.
TARGETS = {
    "action_reply_check": [("rasa.core.actions.action", "RemoteAction", "_validate_action_result")],
    "event_classes": [("rasa.shared.core.events", "Event", "resolve_by_type")],
    "eager_build": [("rasa.utils.tensorflow.models", "RasaModel", "load")],
    "concrete_function": [("rasa.utils.tensorflow.models", "RasaModel", "_rasa_predict")],
    "sparse_features": [("rasa.shared.nlu.training_data.features", "Features", "_combine_sparse_features")],
    "kept_connections": [("rasa.utils.endpoints", "EndpointConfig", "request"),
                         ("rasa.core.run", None, "close_resources")],
    "stored_events_json": [("rasa.core.actions.action", "RemoteAction", "_action_call_format")],
    "graph_order": [("rasa.engine.runner.dask", "DaskGraphRunner", "run")],
    "rule_index": [("rasa.core.policies.rule_policy", "RulePolicy", "_get_possible_keys")],
    "memoization_skip": [("rasa.core.policies.memoization", "AugmentedMemoizationPolicy", "recall")],
    "rule_states": [("rasa.core.featurizers.tracker_featurizers", "TrackerFeaturizer", "_create_states"),
                    ("rasa.core.policies.rule_policy", "RulePolicy", "_predict")],
    "tracker_replays": [("rasa.shared.core.trackers", "DialogueStateTracker", "applied_events"),
                        ("rasa.shared.core.trackers", "DialogueStateTracker", "copy"),
                        ("rasa.core.processor", "MessageProcessor", "_run_action")],
    "empty_domain": [("rasa.shared.core.domain", "Domain", "is_empty")],
    "debug_copies": [("rasa.core.policies.rule_policy", "RulePolicy", "format_tracker_states"),
                     ("rasa.core.processor", None, "copy"), ("rasa.core.actions.forms", None, "copy"),
                     ("rasa.core.policies.rule_policy", None, "copy"), ("rasa.core.policies.memoization", None, "copy")],
    "gc_freeze": [("rasa.core.run", None, "load_agent_on_start")],
    "nlu_cache": [("rasa.core.processor", "MessageProcessor", "_parse_message_with_graph")],
}
ABSENT = object()


def owner_of(module: str, cls: str | None):
    found = importlib.import_module(module)
    return getattr(found, cls) if cls else found


def rasa_as_it_is() -> dict:
    """What each target's class or module holds itself (not inherited), by identity."""
    return {(module, cls, name): vars(owner_of(module, cls)).get(name, ABSENT)
            for targets in TARGETS.values() for module, cls, name in targets}


STOCK = rasa_as_it_is()  # at collection, before any test installed anything


def test_rasa_patches_selects_all_none_or_a_list():
    assert patches.parse(None) == patches.parse("") == patches.parse("all") == patches.TOPICS
    assert set(patches.TOPICS) == set(TARGETS)
    assert patches.parse("none") == ()
    # A list, in install order whatever order it was written in, spaces and repeats ignored.
    assert patches.parse(" nlu_cache, rule_index ,nlu_cache") == ("rule_index", "nlu_cache")
    assert patches.selection_from({"RASA_PATCHES": "gc_freeze"}) == ("gc_freeze",)
    assert patches.selection_from({}) == patches.TOPICS
    assert patches.describe(()) == "speed patches: none"
    assert patches.describe(("rule_index", "nlu_cache")) == "speed patches: rule_index, nlu_cache"


@pytest.mark.parametrize("value", ["bogus", "nlu_cache,bogus", "All", "none,nlu_cache", ","])
def test_an_unknown_patch_name_is_refused_with_the_valid_ones(value):
    with pytest.raises(patches.SelectionError) as refused:
        patches.parse(value)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("RASA_PATCHES: unknown patch ")
    assert all(topic in message for topic in patches.TOPICS)
    with pytest.raises(patches.SelectionError):
        patches.install(["bogus"])


@pytest.mark.parametrize("switch,topic", [("GC_FREEZE", "gc_freeze"), ("MEMOIZATION_SKIP", "memoization_skip")])
def test_the_old_single_switches_are_refused_for_rasa_patches(switch, topic):
    with pytest.raises(patches.SelectionError) as refused:
        patches.selection_from({switch: "0"})
    assert "RASA_PATCHES" in str(refused.value) and topic not in str(refused.value).split(": ", 1)[1].split(",")


def test_none_leaves_every_attribute_the_patches_touch_as_rasa_ships_it():
    assert patches.install(patches.parse("none")) == ()
    assert patches.installed() == ()
    now = rasa_as_it_is()
    assert all(now[key] is STOCK[key] for key in STOCK)
    assert patches.install() == patches.TOPICS
    try:
        now = rasa_as_it_is()
        assert [key for key in STOCK if now[key] is STOCK[key]] == []  # all replaced
    finally:
        patches.uninstall()
    now = rasa_as_it_is()
    assert all(now[key] is STOCK[key] for key in STOCK)
    assert vars(owner_of("rasa.core.policies.rule_policy", "RulePolicy")).get("format_tracker_states") is None


@pytest.mark.parametrize("topic", patches.TOPICS)
def test_each_topic_installs_and_uninstalls_on_its_own(topic):
    mine = {(module, cls, name) for module, cls, name in TARGETS[topic]}
    assert patches.install([topic]) == (topic,)
    try:
        assert patches.install([topic]) == (topic,)  # a second time: nothing more
        now = rasa_as_it_is()
        changed = {key for key in STOCK if now[key] is not STOCK[key]}
        assert changed == mine
        for module, cls, name in mine:  # what tests compare with is Rasa's own
            if STOCK[(module, cls, name)] is not ABSENT:
                assert patches.original(owner_of(module, cls), name) is STOCK[(module, cls, name)]
    finally:
        patches.uninstall()
    now = rasa_as_it_is()
    assert all(now[key] is STOCK[key] for key in STOCK)


def test_nothing_is_installed_on_another_rasa_version(monkeypatch, caplog):
    import rasa

    monkeypatch.setattr(rasa, "__version__", "3.6.20")
    with caplog.at_level(logging.WARNING, logger="rasa_server.patches"):
        assert patches.install() == ()
    assert "written for Rasa 3.6.21, found 3.6.20" in caplog.text
    now = rasa_as_it_is()
    assert all(now[key] is STOCK[key] for key in STOCK)


def rasa_server(env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("RASA_PATCHES", "GC_FREEZE", "MEMOIZATION_SKIP")}
    return subprocess.run([sys.executable, "-m", "rasa_server", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env}, timeout=300)


def test_python_m_rasa_server_logs_the_patches_it_runs_with():
    for value, line in [("none", "rasa_server: speed patches: none"),
                        ("nlu_cache,rule_index", "rasa_server: speed patches: rule_index, nlu_cache")]:
        done = rasa_server({"RASA_PATCHES": value}, "--version")
        assert done.returncode == 0, done.stderr[-2000:]
        assert line in done.stderr.splitlines()
        assert "3.6.21" in done.stdout


@pytest.mark.parametrize("env", [{"RASA_PATCHES": "nlu_cache,fast_everything"}, {"GC_FREEZE": "0"}])
def test_python_m_rasa_server_refuses_to_start_with_an_unknown_patch(env):
    done = rasa_server(env, "run", "--model", "models/current.tar.gz")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "RASA_PATCHES" in done.stderr
    assert "speed patches:" not in done.stderr
