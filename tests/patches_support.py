"""What the tests of the speed patches (tests/test_patches*.py) share: the trained model's
agent (loaded once per test session), a conversation through every kind of event, and Rasa's
parse and predictions over a conversation to compare with."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from rasa.core.channels import UserMessage
from rasa.core.policies.rule_policy import RulePolicy
from rasa.core.processor import MessageProcessor
from rasa.shared.core.events import ActionExecuted, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from tools.stack import ROOT

ORIGINAL_PARSE = MessageProcessor._parse_message_with_graph


@functools.lru_cache(maxsize=None)
def load_agent():
    """The trained model, loaded once for all the modules that use it (about 10 s each)."""
    from rasa.core.agent import Agent

    return Agent.load(str(ROOT / "models" / "current.tar.gz"))


GRAPH_TEXTS = ["halo", "cek status vaksin saya", "081234567001", "123456", "2", "download sertifikat",
               "mau ganti email", "warga@example.com", "ya", "selesai", "apa itu booster?", "asdfgh"]


@contextlib.contextmanager
def every_message_through_the_graph():
    """Rasa's parse, without the NLU cache."""
    cached_parse = MessageProcessor._parse_message_with_graph
    MessageProcessor._parse_message_with_graph = ORIGINAL_PARSE
    try:
        yield
    finally:
        MessageProcessor._parse_message_with_graph = cached_parse


def predictions_over_a_conversation(agent) -> list:
    """Every message parsed and, after it and after the action predicted for it, the next
    action predicted: what the graphs and the policy give, turn by turn."""
    processor = agent.processor

    def predict(tracker):
        prediction = processor._predict_next_with_tracker(tracker)
        return (prediction.max_confidence_index, prediction.policy_name, prediction.probabilities,
                [{k: v for k, v in e.as_dict().items() if k != "timestamp"} for e in prediction.events])

    async def conversation():
        tracker = DialogueStateTracker("graph-runner", agent.domain.slots)
        tracker.update_with_events([ActionExecuted("action_session_start"), SessionStarted(),
                                    ActionExecuted("action_listen")], agent.domain)
        seen = []
        for text in GRAPH_TEXTS:
            parsed = await processor.parse_message(UserMessage(text))
            tracker.update(UserUttered(text, parsed["intent"], parsed["entities"], parsed))
            first = predict(tracker)
            tracker.update(ActionExecuted(agent.domain.action_names_or_texts[first[0]]))
            seen.append((parsed, first, predict(tracker)))
            tracker.update(ActionExecuted("action_listen"))
        return seen

    with every_message_through_the_graph():
        return asyncio.run(conversation())


UNCACHED_TEXTS = ["081234567001", "0812 3456 7002", "+6281234567003", "123456", "kode saya 654321",
                  "warga@example.com", "ganti email ke budi.santoso@contoh.co.id", "3171014501900001",
                  "apa itu booster?", "sertifikat saya kok belum muncul padahal sudah vaksin dua kali di "
                  "puskesmas kecamatan bulan lalu, tolong dicek ya kak", "x", "🙏", "halo", "2", "batal"]


def parses(agent, texts) -> list:
    async def parse_all():
        return [await agent.processor.parse_message(UserMessage(text)) for text in texts]

    with every_message_through_the_graph():
        return asyncio.run(parse_all())


def rule_policy_of(agent) -> RulePolicy:
    nodes = agent.processor.graph_runner._instantiated_nodes.values()
    return next(node._component for node in nodes if isinstance(node._component, RulePolicy))


def every_kind_of_event() -> list:
    """A conversation that goes through forms, an interruption, a rejected action, undos, a
    restart and a new session."""
    from rasa.shared.core.events import (ActionExecutionRejected, ActionReverted, ActiveLoop, LoopInterrupted,
                                         Restarted, UserUtteranceReverted)

    def user(text, intent, entities=()):
        return UserUttered(text, {"name": intent, "confidence": 1.0}, list(entities))

    return [
        ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
        user("halo", "greet"), ActionExecuted("utter_greet"), ActionExecuted("action_listen"),
        user("cek status", "check_vaccination_status"), ActionExecuted("status_form"), ActiveLoop("status_form"),
        SlotSet("requested_slot", "phone_number"), ActionExecuted("action_listen"),
        user("apa itu booster?", "faq"), ActionExecutionRejected("status_form"), LoopInterrupted(True),
        ActionExecuted("utter_faq"), ActionExecuted("status_form"), LoopInterrupted(False),
        SlotSet("requested_slot", "phone_number"), ActionExecuted("action_listen"),
        user("0812 3456 7001", "inform", [{"entity": "phone_number", "value": "081234567001"}]),
        ActionExecuted("status_form"), SlotSet("phone_number", "+6281234567001"),
        SlotSet("requested_slot", "otp_code"), ActionExecuted("action_listen"),
        user("salah", "deny"), UserUtteranceReverted(), user("123456", "inform"),
        ActionExecuted("status_form"), SlotSet("otp_code", "123456"), ActiveLoop(None),
        SlotSet("requested_slot", None), ActionExecuted("action_show_status"), ActionReverted(),
        ActionExecuted("action_show_status"), ActionExecuted("action_listen"),
        user("mulai lagi", "restart"), ActionExecuted("action_restart"), Restarted(),
        ActionExecuted("action_listen"), user("menu", "show_menu"), ActionExecuted("utter_menu"),
        ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
        user("2", "check_vaccination_status"), ActionExecuted("status_form"), ActiveLoop("status_form"),
    ]


def everything_of(tracker) -> dict:
    """All a tracker is: its state as Rasa serialises it, and each attribute besides."""
    from rasa.shared.core.trackers import EventVerbosity

    return {**tracker.current_state(EventVerbosity.ALL),
            "attributes": {k: v for k, v in vars(tracker).items() if k not in ("events", "slots")},
            "event_ids": [id(e) for e in tracker.events], "maxlen": tracker.events.maxlen,
            "slots": {name: (type(slot), slot.value, slot.has_been_set) for name, slot in tracker.slots.items()}}
