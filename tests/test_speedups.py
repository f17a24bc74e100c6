"""The speed-ups (rasa_server/speedups.py, rasa_server/tracker_store.py) behave as what they replace."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import time
import types

import pytest
import sqlalchemy as sa
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from rasa.core.channels import UserMessage
from rasa.core import run as rasa_run
from rasa.core.featurizers.tracker_featurizers import TrackerFeaturizer
from rasa.core.policies.rule_policy import RulePolicy
from rasa.core.processor import MessageProcessor
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.shared.core import events
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from rasa.shared.utils.common import all_subclasses
from rasa.shared.nlu.training_data.features import Features
from rasa.utils.endpoints import ClientResponseError, EndpointConfig
from rasa.utils.tensorflow.models import RasaModel

from conftest import make_store, serve_on_loopback
from rasa_server import speedups
from tools.stack import ROOT

ORIGINAL_VALIDATE = RemoteAction._validate_action_result
ORIGINAL_RESOLVE = events.Event.resolve_by_type
ORIGINAL_PARSE = MessageProcessor._parse_message_with_graph
ORIGINAL_RUN = DaskGraphRunner.run
ORIGINAL_FORMAT = RulePolicy.format_tracker_states  # Policy's, which RulePolicy inherits
ORIGINAL_RULE_PREDICT = RulePolicy._predict
ORIGINAL_POSSIBLE_KEYS = RulePolicy._get_possible_keys
ORIGINAL_CREATE_STATES = TrackerFeaturizer.__dict__["_create_states"]
ORIGINAL_IS_EMPTY = Domain.is_empty
ORIGINAL_COPY = DialogueStateTracker.copy
ORIGINAL_APPLIED = DialogueStateTracker.applied_events
ORIGINAL_RASA_PREDICT = RasaModel._rasa_predict
ORIGINAL_COMBINE_SPARSE = Features._combine_sparse_features
ORIGINAL_ACTION_CALL_FORMAT = RemoteAction._action_call_format


@pytest.fixture(scope="module")
def installed():
    speedups.install()
    yield
    speedups.uninstall()


GOOD_REPLIES = [
    {"events": [], "responses": []},
    {"events": [{"event": "slot", "name": "phone_number", "value": "x", "timestamp": None}],
     "responses": [{"response": "utter_ask_otp_code"}, {"text": "halo", "buttons": []}]},
    {"events": [{"event": "active_loop", "name": None}]},
]
BAD_REPLIES = [
    {"events": "not a list"},
    {"events": [{"name": "no event type"}]},
    {"responses": "x"},
]


@pytest.mark.parametrize("reply", GOOD_REPLIES)
def test_valid_action_replies_pass_as_before(installed, reply):
    action = RemoteAction("action_x", None)
    assert ORIGINAL_VALIDATE(action, reply) is True
    assert action._validate_action_result(reply) is True


@pytest.mark.parametrize("reply", BAD_REPLIES)
def test_invalid_action_replies_fail_as_before(installed, reply):
    action = RemoteAction("action_x", None)
    with pytest.raises(ValidationError) as before:
        ORIGINAL_VALIDATE(action, copy.deepcopy(reply))
    with pytest.raises(ValidationError) as after:
        action._validate_action_result(copy.deepcopy(reply))
    assert after.value.message == before.value.message


SAMPLE_EVENTS = [
    UserUttered("halo", {"name": "greet", "confidence": 0.9},
                [{"entity": "nik", "value": "x", "start": 0, "end": 1}],
                parse_data={"intent": {"name": "greet", "confidence": 0.9}, "entities": [],
                            "intent_ranking": [{"name": "greet", "confidence": 0.9}], "text": "halo"}),
    BotUttered("hai", {"buttons": [{"title": "Ya", "payload": "/affirm"}]}),
    ActionExecuted("action_listen"),
    SlotSet("persons", [{"id": 1, "name": "Budi"}]),
    SlotSet("otp_code", None),
    SessionStarted(),
    events.ActiveLoop("verify_form"),
    events.ActiveLoop(None),
    events.FollowupAction("action_x"),
    events.Restarted(),
    events.AllSlotsReset(),
    events.ActionExecutionRejected("action_x"),
    events.LoopInterrupted(True),
    events.ReminderScheduled("EXTERNAL_x", __import__("datetime").datetime(2026, 1, 1)),
    events.ReminderCancelled(name="r"),
    events.ConversationPaused(),
    events.ConversationResumed(),
    events.EntitiesAdded([{"entity": "dose", "value": "2"}]),
]


def _mutations(event: dict):
    """Each event as Rasa writes it, then spoiled in ways the schema catches (or lets by)."""
    yield event
    for key, value in event.items():
        if key == "event":
            yield {**event, "event": "no_such_event"}
            yield {**event, "event": 7}
            continue
        for wrong in (7, "x", None, [], {"a": 1}, True):
            yield {**event, key: wrong}
        yield {k: v for k, v in event.items() if k != key}
    yield {**event, "extra": {"nested": [1]}}


def test_event_checks_give_rasas_verdict_on_every_kind_of_event(installed):
    action = RemoteAction("action_x", None)
    verdicts = {True: 0, False: 0}
    for sample in SAMPLE_EVENTS:
        for event in _mutations(sample.as_dict()):
            for reply in ({"events": [event]}, {"events": [SlotSet("a", 1).as_dict(), event]}):
                try:
                    expected = ORIGINAL_VALIDATE(action, copy.deepcopy(reply))
                except ValidationError:
                    expected = False
                try:
                    got = action._validate_action_result(copy.deepcopy(reply))
                except ValidationError:
                    got = False
                assert got == expected, reply
                verdicts[expected] += 1
    assert verdicts[True] > 100 and verdicts[False] > 100  # both verdicts well exercised


def test_every_event_type_resolves_to_the_same_class(installed):
    names = {cls.type_name for cls in all_subclasses(events.Event)}
    assert len(names) > 20
    for name in names:
        assert events.Event.resolve_by_type(name) is ORIGINAL_RESOLVE(name)
    assert events.Event.resolve_by_type("no such event", default=SlotSet) is SlotSet
    with pytest.raises(ValueError):
        events.Event.resolve_by_type("no such event")


class CountingProcessor:
    """Just what the parse cache uses of a MessageProcessor, counting real parses."""

    def __init__(self, model_filename="model-a.tar.gz"):
        self.model_filename = model_filename
        self.parses = []

    def parse(self, message, tracker, only_output_properties=True):
        self.parses.append(message.text)
        return {"text": message.text, "intent": {"name": "greet", "confidence": 0.99}, "entities": []}


@pytest.fixture
def parse_cache(monkeypatch):
    monkeypatch.setattr(MessageProcessor, "_parse_message_with_graph", CountingProcessor.parse)
    speedups._cache_parses(size=2)
    return MessageProcessor._parse_message_with_graph


def test_parse_cache_reuses_results_for_plain_texts_as_copies(parse_cache):
    processor = CountingProcessor()
    first = parse_cache(processor, UserMessage("halo kak"), None)
    first["intent"]["name"] = "changed by a caller"
    second = parse_cache(processor, UserMessage("halo kak"), None)
    assert processor.parses == ["halo kak"]
    assert second["intent"]["name"] == "greet"
    # Another model: parsed again.
    other = CountingProcessor("model-b.tar.gz")
    parse_cache(other, UserMessage("halo kak"), None)
    assert other.parses == ["halo kak"]


@pytest.mark.parametrize("text", ["081234567001", "kode saya 123456", "ganti email ke a@b.id",
                                  "nik 3171014501900001", "lahir 15/01/90", "12", "PL-2026-000123",
                                  "x" * 81, ""])
def test_parse_cache_never_keeps_personal_data(parse_cache, text):
    processor = CountingProcessor()
    parse_cache(processor, UserMessage(text), None)
    parse_cache(processor, UserMessage(text), None)
    assert processor.parses == [text, text]


def test_parse_cache_keeps_menu_numbers_and_doses(parse_cache):
    processor = CountingProcessor()
    for text in ["2", "dosis 3", "2", "dosis 3"]:
        parse_cache(processor, UserMessage(text), None)
    assert processor.parses == ["2", "dosis 3"]


def test_parse_cache_is_bounded(parse_cache):
    processor = CountingProcessor()
    for text in ["a", "b", "c", "a"]:
        parse_cache(processor, UserMessage(text), None)
    assert processor.parses == ["a", "b", "c", "a"]  # "a" was the oldest of three in a cache of two


# --- the tracker store ---------------------------------------------------------------------------


@pytest.fixture
def store(database_url):
    store = make_store(database_url)
    yield store
    store.dispose()


def stored(store, sender):
    with store.session_scope() as session:
        return [(row.type_name, row.intent_name, row.action_name)
                for row in session.query(store.SQLEvent).filter_by(sender_id=sender).order_by(store.SQLEvent.id)]


def test_tracker_store_keeps_every_event_once_in_order(store):
    sender = "speedups-order"
    run = asyncio.run
    t = time.time()  # a session's first two events share its start time, as when Rasa writes them
    tracker = DialogueStateTracker(sender, store.domain.slots)
    tracker.update(ActionExecuted("action_session_start", timestamp=t))
    tracker.update(SessionStarted(timestamp=t))
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 1))
    run(store.save(tracker))  # a new tracker: counted the usual way
    tracker = run(store.retrieve(sender))
    assert len(tracker.events) == 3
    tracker.update(BotUttered("Halo!", timestamp=t + 2))
    tracker.update(ActionExecuted("utter_greet", timestamp=t + 3))
    run(store.save(tracker))  # the count comes from retrieve()
    tracker.update(ActionExecuted("action_listen", timestamp=t + 4))
    run(store.save(tracker))  # saved twice: counted again, nothing doubled
    # A new session inside a turn: the old session's events are not written again.
    tracker = run(store.retrieve(sender))
    tracker.update(ActionExecuted("action_session_start", timestamp=t + 5))
    tracker.update(SessionStarted(timestamp=t + 5))
    tracker.update(UserUttered("menu", {"name": "show_menu", "confidence": 1.0}, timestamp=t + 6))
    run(store.save(tracker))
    assert stored(store, sender) == [
        ("action", None, "action_session_start"), ("session_started", None, None),
        ("user", "greet", None), ("bot", None, None), ("action", None, "utter_greet"),
        ("action", None, "action_listen"), ("action", None, "action_session_start"),
        ("session_started", None, None), ("user", "show_menu", None)]
    again = run(store.retrieve(sender))
    assert [e.type_name for e in again.events] == ["action", "session_started", "user"]
    assert [e.type_name for e in run(store.retrieve_full_tracker(sender)).events][:3] == [
        "action", "session_started", "user"]
    assert len(run(store.retrieve_full_tracker(sender)).events) == 9
    assert run(store.retrieve("speedups-nobody")) is None


def test_a_new_conversation_is_never_counted_and_stored_once(store, monkeypatch):
    """Rasa saves a new conversation's tracker three times in its first turn: empty, after the
    session start, at the end, through its wrappers of the store as in production. None of them
    counts the stored events in the database: Rasa created the tracker because none was stored."""
    from rasa.core.tracker_store import AwaitableTrackerStore, FailSafeTrackerStore, SQLTrackerStore

    counted = []
    rasa_count = SQLTrackerStore._additional_events
    monkeypatch.setattr(SQLTrackerStore, "_additional_events",
                        lambda self, session, tracker: counted.append(1) or rasa_count(self, session, tracker))
    run = asyncio.run
    wrapped = AwaitableTrackerStore(FailSafeTrackerStore(store))
    sender, t = "speedups-new", time.time()
    tracker = run(wrapped.get_or_create_tracker(sender, append_action_listen=False))
    tracker.update(ActionExecuted("action_session_start", timestamp=t))
    tracker.update(SessionStarted(timestamp=t))
    tracker.update(ActionExecuted("action_listen", timestamp=t + 1))
    run(wrapped.save(tracker))
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 2))
    tracker.update(BotUttered("Halo!", timestamp=t + 3))
    tracker.update(ActionExecuted("action_listen", timestamp=t + 4))
    run(wrapped.save(tracker))
    run(wrapped.save(tracker))  # nothing new: nothing written
    assert counted == []
    assert [row[0] for row in stored(store, sender)] == [
        "action", "session_started", "action", "user", "bot", "action"]
    assert [e.type_name for e in run(store.retrieve(sender)).events] == [
        "action", "session_started", "action", "user", "bot", "action"]
    # A tracker the store knows nothing of is counted: retrieve() found nothing of this one, but
    # its one save took that knowledge; the second tracker is new to the store.
    other = "speedups-new-2"
    assert run(wrapped.retrieve(other)) is None
    first = DialogueStateTracker(other, store.domain.slots)
    first.update(ActionExecuted("action_listen", timestamp=t))
    run(store.save(first))
    second = DialogueStateTracker(other, store.domain.slots)
    second.update(ActionExecuted("action_listen", timestamp=t))
    second.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 1))
    run(store.save(second))
    assert counted == [1]
    assert [row[0] for row in stored(store, other)] == ["action", "user"]


def test_tracker_store_survives_connections_broken_by_a_restart(store, database_url):
    """Pooled connections killed (as a database restart does): the next read and save go
    through on fresh connections, without an apology to the citizen."""
    import psycopg2

    run = asyncio.run
    sender = "speedups-restart"
    tracker = DialogueStateTracker(sender, store.domain.slots)
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
    run(store.save(tracker))
    with store.engine.connect() as connection:  # the one connection the ORM's pool holds
        pids = [connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()]
    pids += [connection.get_backend_pid() for connection in store._pool.idle]  # the statements' one
    assert len(pids) == 2
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        for pid in pids:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()

    tracker = run(store.retrieve(sender))  # plain SQL: its pool's connection was killed
    tracker.update(ActionExecuted("utter_greet"))
    run(store.save(tracker))
    newcomer = DialogueStateTracker(sender + "-2", store.domain.slots)
    newcomer.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
    run(store.save(newcomer))  # counted through the ORM: that pool's connection was killed too
    assert [row[0] for row in stored(store, sender)] == ["user", "action"]
    assert [row[0] for row in stored(store, sender + "-2")] == ["user"]


def test_tracker_store_commits_without_waiting_for_the_disk_unless_told(store, database_url, monkeypatch):
    def setting(engine):  # the value, and where it came from ("client": the connection's options)
        with engine.connect() as connection:
            return tuple(connection.execute(sa.text(
                "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")).one())

    assert setting(store.engine) == ("off", "client")
    assert asyncio.run(store._rows("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'",
                                   {})) == [("off", "client")]
    monkeypatch.setenv("TRACKER_SYNCHRONOUS_COMMIT", "on")
    durable = make_store(database_url)
    assert setting(durable.engine)[1] != "client"  # the server's setting (tests: the database's)
    durable.dispose()


def test_recent_tracker_is_reused_only_while_nobody_wrote_since(store, database_url):
    run = asyncio.run
    sender = "speedups-recent"
    t = time.time()
    tracker = DialogueStateTracker(sender, store.domain.slots)
    tracker.update(ActionExecuted("action_session_start", timestamp=t))
    tracker.update(SessionStarted(timestamp=t))
    run(store.save(tracker))  # a session began in this turn: not kept
    assert run(store.retrieve(sender)) is not tracker

    tracker = run(store.retrieve(sender))
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}, timestamp=t + 1))
    tracker.update(SlotSet("phone_number", "+6281234567001", timestamp=t + 2))
    run(store.save(tracker))
    again = run(store.retrieve(sender))
    assert again is tracker  # no read of the events
    assert run(store.retrieve(sender)) is not tracker  # taken: a second caller reads the database
    fresh = make_store(database_url)
    assert list(run(fresh.retrieve(sender)).events) == list(again.events)
    assert again.get_slot("phone_number") == "+6281234567001"

    # Saved again by this process, then another process (another Rasa worker) writes.
    again.update(ActionExecuted("action_listen", timestamp=t + 3))
    run(store.save(again))
    other = run(fresh.retrieve(sender))
    other.update(SlotSet("phone_number", "+6281234567002", timestamp=t + 4))
    run(fresh.save(other))
    latest = run(store.retrieve(sender))
    assert latest is not again and latest.get_slot("phone_number") == "+6281234567002"
    assert [row[0] for row in stored(store, sender)] == [
        "action", "session_started", "user", "slot", "action", "slot"]
    fresh.dispose()


def test_recent_trackers_can_be_turned_off(database_url, monkeypatch):
    monkeypatch.setenv("TRACKER_CACHE_SIZE", "0")
    store = make_store(database_url)
    run = asyncio.run
    tracker = DialogueStateTracker("speedups-nocache", store.domain.slots)
    tracker.update(UserUttered("halo", {"name": "greet", "confidence": 1.0}))
    run(store.save(tracker))
    assert run(store.retrieve("speedups-nocache")) is not tracker
    store.dispose()


PARSE_SCRIPT = """
import asyncio, json, sys
if sys.argv[1] == "eager":
    from rasa_server import speedups
    speedups._build_models_eagerly()
from rasa.core.agent import Agent
async def main():
    agent = Agent.load(sys.argv[2])
    out = []
    for text in json.loads(sys.argv[3]):
        r = await agent.parse_message(text)
        faq = (r.get("response_selector") or {}).get("faq")
        out.append([r["intent"]["name"], round(r["intent"]["confidence"], 5),
                    [(e["entity"], e["value"]) for e in r["entities"]],
                    faq and faq["response"]["intent_response_key"],
                    faq and round(faq["response"]["confidence"], 5)])
    print(json.dumps(out))
asyncio.run(main())
"""


def test_models_built_eagerly_predict_exactly_as_rasa_builds_them():
    """The trained model loaded both ways gives the same intents, confidences, entities and FAQ
    answers (the start-up speed-up changes how weights are created, not which)."""
    import json
    import subprocess
    import sys

    model = ROOT / "models" / "current.tar.gz"
    if not model.exists():
        pytest.skip("no trained model (make train)")
    texts = ["halo kak", "gmn cara dwnload sertif vaksin sy", "cek status vaksin ke 2 udh masuk blm",
             "otp nya ga masuk2", "nomor saya 0812 3456 7001", "kode 123456", "i want my vaccine certificate",
             "mau ganti email jadi budi@example.com", "kenapa sertifikat belum muncul", "mau bicara dengan petugas",
             "cuaca jakarta hari ini", "booster kapan ya", "batal", "3", "nik saya 3171014501900001"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    results = {}
    for how in ("rasa", "eager"):
        done = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, how, str(model), json.dumps(texts)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        results[how] = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results["rasa"]) == len(texts)
    assert results["eager"] == results["rasa"]
    # The FAQ answer is chosen for FAQ questions only (nlu_components/faq_selector.py).
    answered = {text: row[3] for text, row in zip(texts, results["rasa"])}
    assert answered["halo kak"] is None and answered["kode 123456"] is None
    faqs = [row for row in results["rasa"] if row[0] == "faq"]
    assert faqs and all(row[3].startswith("faq/") for row in faqs)


# --- calls to the action server -----------------------------------------------------------------


def test_json_written_for_rasa_reads_back_as_json_dumps_would():
    value = {"sender_id": "x", "tracker": {"events": [
        {"event": "bot", "text": "Sertifikat · ✓ siap", "confidence": 0.1 + 0.2, "data": {1: "a", True: None}},
        {"event": "slot", "name": "big", "value": 2**70}]}, "nan_free": [1.5e-7, -0.0, 10**18]}
    written = speedups.dumps(value)
    assert json.loads(written) == json.loads(json.dumps(value))


def test_calls_to_an_endpoint_reuse_one_connection_and_keep_rasas_behaviour(installed):
    from aiohttp import web

    seen = []

    async def webhook(request):
        seen.append((request.transport.get_extra_info("peername")[1], request.headers.get("Authorization"),
                     request.query.get("token"), await request.json()))
        return web.json_response({"events": [], "responses": [{"text": "ok"}]})

    async def broken(request):
        return web.Response(status=500, text="boom")

    async def plain(request):
        return web.Response(text="not json")

    async def scenario():
        app = web.Application()
        app.router.add_post("/webhook", webhook)
        app.router.add_post("/broken", broken)
        app.router.add_post("/plain", plain)
        runner, port = await serve_on_loopback(app)
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"}, token="q")
        try:
            body = {"next_action": "action_x", "tracker": {"events": [{"event": "user", "text": "halo ✓"}]}}
            first = await endpoint.request(json=body, method="post", subpath="webhook")
            second = await endpoint.request(json=body, method="post", subpath="webhook")
            assert first == second == {"events": [], "responses": [{"text": "ok"}]}
            with pytest.raises(ClientResponseError) as error:
                await endpoint.request(json=body, subpath="broken")
            assert error.value.status == 500
            assert await endpoint.request(json=body, subpath="plain") is None
            app = types.SimpleNamespace(ctx=types.SimpleNamespace(agent=None))  # a Sanic app without agent
            await rasa_run.close_resources(app, asyncio.get_running_loop())
            assert await endpoint.request(json=body, subpath="webhook") == first  # a new session
        finally:
            await runner.cleanup()
        return body

    body = asyncio.run(scenario())
    assert len(seen) == 3
    assert seen[0][0] == seen[1][0] != seen[2][0]  # one kept connection, closed with the server
    assert seen[0][1:] == ("Bearer t", "q", body)


def test_action_calls_send_stored_events_as_stored_and_the_same_json_as_rasa(installed, store, database_url):
    """After each event of every_kind_of_event(), saved and read back now and then (from the
    store's memory and from the database): the body sent to the action server is the JSON of
    Rasa's dict, with and without the domain. Events Rasa stamped anew after they were stored are
    written anew; a body orjson cannot write goes Rasa's way."""
    import orjson

    domain = Domain.load(str(ROOT / "domain.yml"))
    endpoint = EndpointConfig("http://127.0.0.1:9", enable_selective_domain=True)
    actions = [RemoteAction("action_show_status", endpoint), RemoteAction("validate_status_form", endpoint)]
    run = asyncio.run
    sender = "speedups-action-calls"
    tracker = DialogueStateTracker(sender, domain.slots)
    tracker.model_id = "model-1"
    reused = 0
    for i, event in enumerate(every_kind_of_event()):
        tracker.update(event, domain)
        if i % 6 == 5:
            run(store.save(tracker))
            if i % 12 == 11:  # read back from the database, by another store
                other = make_store(database_url)
                tracker = run(other.retrieve(sender))
                other.dispose()
            else:
                tracker = run(store.retrieve(sender))
            tracker.model_id = "model-1"
        if i == 20:  # logged once more by Rasa, with a new timestamp: its stored JSON is stale
            stamped = [e for e in tracker.events if speedups.stored_json(e) is not None][-1]
            stamped.timestamp += 1
            assert speedups.stored_json(stamped) is None
        reused = max(reused, sum(speedups.stored_json(e) is not None for e in tracker.events))
        assert speedups.state_without_events(tracker) == tracker.current_state(EventVerbosity.NONE), i
        for action in actions:
            call = action._action_call_format(tracker, domain)
            assert isinstance(call, speedups.ActionCall)
            assert orjson.loads(call.body) == json.loads(json.dumps(ORIGINAL_ACTION_CALL_FORMAT(action, tracker, domain))), i
    assert reused > 20
    tracker.update(SlotSet("dose", 2 ** 70), domain)  # beyond orjson's integers
    call = actions[0]._action_call_format(tracker, domain)
    assert not isinstance(call, speedups.ActionCall)
    assert call == ORIGINAL_ACTION_CALL_FORMAT(actions[0], tracker, domain)
    assert json.loads(speedups.dumps_bytes(call))["tracker"]["slots"]["dose"] == 2 ** 70


# --- the graph runner ----------------------------------------------------------------------------


GRAPH_TEXTS = ["halo", "cek status vaksin saya", "081234567001", "123456", "2", "download sertifikat",
               "mau ganti email", "warga@example.com", "ya", "selesai", "apa itu booster?", "asdfgh"]


@pytest.fixture(scope="module")
def agent():
    from rasa.core.agent import Agent

    return Agent.load(str(ROOT / "models" / "current.tar.gz"))


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


def test_graphs_run_in_order_give_what_dask_gave(installed, agent):
    """The model's NLU and dialogue graphs, run directly and through dask: the same parse of
    every message and the same predictions after each of them."""
    import dask

    patched, dask_get = DaskGraphRunner.run, dask.get
    try:
        DaskGraphRunner.run = ORIGINAL_RUN
        through_dask = predictions_over_a_conversation(agent)
        DaskGraphRunner.run, dask.get = patched, None  # not called when run in order
        in_order = predictions_over_a_conversation(agent)
    finally:
        DaskGraphRunner.run, dask.get = patched, dask_get
    assert in_order == through_dask
    assert len({turn[1][0] for turn in in_order}) > 3  # several different actions were predicted


UNCACHED_TEXTS = ["081234567001", "0812 3456 7002", "+6281234567003", "123456", "kode saya 654321",
                  "warga@example.com", "ganti email ke budi.santoso@contoh.co.id", "3171014501900001",
                  "apa itu booster?", "sertifikat saya kok belum muncul padahal sudah vaksin dua kali di "
                  "puskesmas kecamatan bulan lalu, tolong dicek ya kak", "x", "🙏", "halo", "2", "batal"]


def parses(agent, texts) -> list:
    async def parse_all():
        return [await agent.processor.parse_message(UserMessage(text)) for text in texts]

    with every_message_through_the_graph():
        return asyncio.run(parse_all())


def test_nlu_through_the_concrete_function_and_joined_features_parses_as_rasa(installed, agent, monkeypatch):
    """Every message parsed with DIET and the FAQ selector called through their concrete
    functions and the sparse features joined directly, and Rasa's way: the same intents, rankings
    and confidences to the last bit, entities and FAQ answers; and the tf.function's own lookup
    was not used once the concrete function was known."""
    from tensorflow.python.eager.polymorphic_function.polymorphic_function import Function

    texts = UNCACHED_TEXTS + ["pertanyaan: kenapa harus pakai kode otp sih?"]
    with monkeypatch.context() as rasas_way:
        rasas_way.setattr(RasaModel, "_rasa_predict", ORIGINAL_RASA_PREDICT)
        rasas_way.setattr(Features, "_combine_sparse_features", ORIGINAL_COMBINE_SPARSE)
        expected = parses(agent, texts)
    parses(agent, texts[:1])  # the concrete function is kept after a call
    lookups = []
    original_call = Function.__call__

    def counted(self, *args, **kwargs):
        lookups.append(self)
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(Function, "__call__", counted)
    assert parses(agent, texts) == expected
    assert lookups == []
    assert any(parsed["intent"]["name"] == "faq" and parsed["response_selector"]["faq"]["response"]["intent_response_key"]
               for parsed in expected)  # the FAQ selector's network ran too
    assert any(parsed["entities"] for parsed in expected)


@pytest.mark.parametrize("dtypes", [("float32", "float32"), ("float64", "float32"), ("int64", "float32"),
                                    ("float32", "int32")])
def test_two_coo_matrices_join_as_scipys_hstack_joins_them(dtypes):
    import numpy as np
    import scipy.sparse

    random = np.random.default_rng(7)
    for rows, left_cols, right_cols, density in [(1, 5, 3, 0.5), (7, 40, 900, 0.05), (3, 4, 2, 0.0),
                                                 (12, 70000, 40000, 0.00005), (4, 0, 6, 0.3)]:
        left = scipy.sparse.random(rows, left_cols, density, format="coo", dtype=dtypes[0], random_state=random)
        right = scipy.sparse.random(rows, right_cols, density, format="coo", dtype=dtypes[1], random_state=random)
        right.row = right.row.astype(np.int64)  # index arrays of another dtype than left's
        expected = scipy.sparse.hstack([left, right])
        joined = speedups.hstack_coo(left, right)
        assert joined.format == expected.format == "coo"
        assert joined.shape == expected.shape and joined.dtype == expected.dtype
        for part in ("data", "row", "col"):
            assert getattr(joined, part).dtype == getattr(expected, part).dtype
            assert np.array_equal(getattr(joined, part), getattr(expected, part))


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


def rule_policy_of(agent) -> RulePolicy:
    nodes = agent.processor.graph_runner._instantiated_nodes.values()
    return next(node._component for node in nodes if isinstance(node._component, RulePolicy))


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


def test_kept_rule_states_are_rasas_after_every_event_of_every_kind(monkeypatch):
    """After each event of every_kind_of_event(), and between two trackers of one conversation:
    the applied events and the states are those Rasa makes from the start."""
    monkeypatch.setattr(DialogueStateTracker, "applied_events", ORIGINAL_APPLIED)  # Rasa's, as reference
    domain = Domain.load(str(ROOT / "domain.yml"))
    histories = speedups._Histories(size=4)
    script = every_kind_of_event()
    tracker = DialogueStateTracker("kept-states", domain.slots)
    other = DialogueStateTracker("kept-states", domain.slots)  # the same conversation, behind
    folds = speedups._Folds(size=4)
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


def everything_of(tracker) -> dict:
    """All a tracker is: its state as Rasa serialises it, and each attribute besides."""
    from rasa.shared.core.trackers import EventVerbosity

    return {**tracker.current_state(EventVerbosity.ALL),
            "attributes": {k: v for k, v in vars(tracker).items() if k not in ("events", "slots")},
            "event_ids": [id(e) for e in tracker.events], "maxlen": tracker.events.maxlen,
            "slots": {name: (type(slot), slot.value, slot.has_been_set) for name, slot in tracker.slots.items()}}


def test_tracker_copies_for_actions_are_rasas_copies(installed):
    """While an action runs, every copy of the tracker is what Rasa's replay of all events
    makes, whatever was done to the copies handed out before; outside of actions, Rasa copies."""
    from rasa.shared.core.events import ActionExecutionRejected, ActiveLoop, FollowupAction, LoopInterrupted, Restarted

    domain = Domain.load(str(ROOT / "domain.yml"))
    script = [
        ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
        UserUttered("cek status", {"name": "check_vaccination_status", "confidence": 1.0}),
        ActionExecuted("status_form"), ActiveLoop("status_form"), SlotSet("requested_slot", "phone_number"),
        ActionExecuted("action_listen"), UserUttered("apa itu booster?", {"name": "faq", "confidence": 1.0}),
        ActionExecutionRejected("status_form"), LoopInterrupted(True), ActionExecuted("utter_faq"),
        ActionExecuted("status_form"), LoopInterrupted(False), SlotSet("phone_number", "+6281234567001"),
        BotUttered("Kode sudah dikirim", {"buttons": []}), FollowupAction("action_show_status"),
        ActionExecuted("action_show_status"), ActiveLoop(None), ActionExecuted("action_listen"),
        UserUttered("mulai lagi", {"name": "restart", "confidence": 1.0}), ActionExecuted("action_restart"),
        Restarted(), ActionExecuted("action_listen"),
    ]
    tracker = DialogueStateTracker("kept-replays", domain.slots)
    tracker.model_id = "model-1"  # set by the processor, not by an event: copies do not carry it
    token = speedups.RUNNING_AN_ACTION.set(True)
    try:
        for i, event in enumerate(script):
            tracker.update(event, domain)
            tracker.clear_followup_action() if i == 17 else None  # as the processor does, without an event
            ours = tracker.copy()
            assert everything_of(ours) == everything_of(ORIGINAL_COPY(tracker)), i
            ours.update(SlotSet("phone_number", "dirusak"))  # what an action may do to its copy
            ours.update(LoopInterrupted(True))  # changes the active loop in place
            ours.update(ActionExecuted("action_listen"))  # replaces the latest action
            assert everything_of(tracker.copy()) == everything_of(ORIGINAL_COPY(tracker)), i
        behind = DialogueStateTracker("kept-replays", domain.slots)  # the same conversation, other events
        behind.update_with_events(script[:5], domain)
        assert everything_of(behind.copy()) == everything_of(ORIGINAL_COPY(behind))
    finally:
        speedups.RUNNING_AN_ACTION.reset(token)
    assert everything_of(tracker.copy()) == everything_of(ORIGINAL_COPY(tracker))


def test_rule_states_are_formatted_for_debug_logs_only(installed, caplog):
    states = [{"user": {"intent": "greet"}, "prev_action": {"action_name": "action_listen"}}]
    assert RulePolicy.format_tracker_states(states) == ""
    with caplog.at_level(logging.DEBUG, logger="rasa.core.policies.rule_policy"):
        assert RulePolicy.format_tracker_states(states) == ORIGINAL_FORMAT(states)
        assert "user intent: greet" in RulePolicy.format_tracker_states(states)


def test_a_domain_is_empty_exactly_when_rasa_says_so(installed):
    ours = Domain.load(str(ROOT / "domain.yml"))
    for domain in (Domain.empty(), Domain.from_dict({}), ours, Domain.from_dict({"intents": ["greet"]})):
        assert domain.is_empty() == ORIGINAL_IS_EMPTY(domain)
    assert Domain.empty().is_empty() and not ours.is_empty()


def test_the_start_up_heap_is_left_out_of_garbage_collection_once_the_model_is_loaded(monkeypatch):
    import gc

    loaded = object()

    async def load_agent_on_start(*args, **kwargs):
        assert gc.get_freeze_count() == 0  # not before the model is loaded
        return loaded

    monkeypatch.setattr(rasa_run, "load_agent_on_start", load_agent_on_start)
    monkeypatch.setattr(speedups, "_originals", [])  # this test's patch is undone by monkeypatch
    thresholds = gc.get_threshold()
    speedups._garbage_collection_without_the_start_up_heap()
    try:
        assert asyncio.run(rasa_run.load_agent_on_start("model", None, None, None, None)) is loaded
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == speedups.YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_copies_for_debug_logs_are_made_only_when_logged(installed, caplog):
    """In each module whose copies are left to debug logging, every use of the copy module is a
    deep copy inside a structlogger.debug(...) call; those copies are made when the module logs
    at debug level, and not otherwise."""
    import ast
    import importlib
    import inspect

    for name in speedups.DEBUG_COPY_MODULES:
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
