"""Per-message work that stock Rasa 3.6 repeats and need not, done once instead.

Found by profiling `make bench` with py-spy (docs/performance.md); each replacement keeps the
behaviour of what it replaces, and tests/test_speedups.py checks that on Rasa's own inputs. They
are patches because Rasa has no setting for them: revisit on every Rasa upgrade (install()
refuses a Rasa other than the one they were written for).
"""

from __future__ import annotations

import base64
import contextvars
import copy
import dataclasses
import functools
import itertools
import json
import logging
import os
import re
import zlib
from collections import OrderedDict
from typing import Any, Optional

import orjson
from rasa.shared.core.constants import ACTIVE_LOOP, FOLLOWUP_ACTION

logger = logging.getLogger(__name__)

RASA_VERSION = "3.6.21"
# Set while Rasa's processor runs an action (_tracker_copies_from_kept_replays).
RUNNING_AN_ACTION: contextvars.ContextVar[bool] = contextvars.ContextVar("running_an_action", default=False)
_installed = False
_ABSENT = object()
# What install() replaced, in order: (class or module, attribute, what its __dict__ held).
_originals: list[tuple[Any, str, Any]] = []


def _patch(owner: Any, name: str, value: Any) -> None:
    _originals.append((owner, name, owner.__dict__.get(name, _ABSENT)))
    setattr(owner, name, value)


def uninstall() -> None:
    """Put back everything install() replaced, last first (for tests)."""
    global _installed
    while _originals:
        owner, name, value = _originals.pop()
        if value is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, value)
    _installed = False


def install() -> None:
    global _installed
    import rasa

    if _installed:
        return
    if rasa.__version__ != RASA_VERSION:
        logger.warning("Speed-ups written for Rasa %s, found %s: not applied.", RASA_VERSION, rasa.__version__)
        return
    _validate_action_result_once()
    _event_types_by_name()
    _build_models_eagerly()
    _predict_through_the_concrete_function()
    _sparse_features_joined_directly()
    _keep_connections_open()
    _action_calls_with_stored_events()
    _run_graphs_in_order()
    _format_rule_states_only_for_debug_logs()
    _rules_indexed_by_their_last_state()
    if os.environ.get("MEMOIZATION_SKIP", "1") != "0":  # 0: Rasa's own recall (tests compare)
        _memoization_recalls_only_what_can_match()
    replays = int(os.environ.get("REPLAY_CACHE_SIZE", "512"))
    _rule_states_incrementally(replays)
    if replays > 0:
        _applied_events_from_kept_folds(replays)
        _tracker_copies_from_kept_replays(replays)
    _empty_domain_built_once()
    _copies_for_debug_logs_only_when_logged()
    if os.environ.get("GC_FREEZE", "1") != "0":
        _garbage_collection_without_the_start_up_heap()
    size = int(os.environ.get("NLU_CACHE_SIZE", "4096"))
    if size > 0:
        _cache_parses(size)
    _installed = True


def _validate_action_result_once() -> None:
    """Every custom action's reply is checked against a JSON schema, and checking it was the
    largest single cost of a message in our profile, for three reasons:
    - Rasa calls `jsonschema.validate(result, schema)`, which first validates the *schema*
      against the metaschema, every time.
    - Each event is checked against a `oneOf` of 23 event schemas, all of which are tried (and
      22 fail, building error objects) for every event. Each of those schemas requires its own
      constant `event` name, so at most the one named by the event can hold: oneOf holds exactly
      when that one does. The events are checked against that one alone (10x faster).
    - jsonschema interprets the schema for every value. fastjsonschema compiles each schema
      into Python code once (15x faster again: 27 µs for a reply of 14 events and a response).
    A reply that fails goes through Rasa's own check, for Rasa's own verdict and error."""
    import fastjsonschema
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction

    spec = RemoteAction.action_response_format_spec()
    validator_for(spec).check_schema(spec)
    without_one_of = copy.deepcopy(spec)
    event_schemas = without_one_of["properties"]["events"]["items"].pop("oneOf")
    by_name = {schema["properties"]["event"]["const"]: fastjsonschema.compile(schema) for schema in event_schemas}
    if len(by_name) != len(event_schemas):
        raise RuntimeError("two event schemas share a name: the oneOf shortcut does not hold")
    check = fastjsonschema.compile(without_one_of)
    original = RemoteAction._validate_action_result

    @functools.wraps(original)
    def validate(self: RemoteAction, result: dict[str, Any]) -> bool:
        try:
            check(result)
            for event in result.get("events") or ():
                # An object with a string "event" here: the schema without oneOf requires it.
                by_name[event["event"]](event)
        except (fastjsonschema.JsonSchemaException, KeyError):
            return original(self, result)  # Rasa's own path, for its verdict and error message
        return True

    _patch(RemoteAction, "_validate_action_result", validate)


def _event_types_by_name() -> None:
    """Reading a conversation from the tracker store turns each stored event into an object;
    for each one Rasa walks the whole Event class tree to find the class of that name. Keep the
    name -> class map; look again (Rasa's way) only for a name the map does not have."""
    from rasa.shared.core import events
    from rasa.shared.utils.common import all_subclasses

    original = events.Event.resolve_by_type
    cache: dict[str, type] = {}

    def resolve_by_type(type_name: str, default: Optional[type] = None) -> Optional[type]:
        cls = cache.get(type_name)
        if cls is None:
            for candidate in all_subclasses(events.Event):
                cache.setdefault(candidate.type_name, candidate)
            cls = cache.get(type_name)
        if cls is not None:
            return cls
        return original(type_name, default)

    _patch(events.Event, "resolve_by_type", staticmethod(resolve_by_type))


def keep_last(kept: OrderedDict, key: Any, value: Any, size: int) -> None:
    """kept[key] = value as its newest entry, the oldest dropped beyond `size`: what each of the
    per-conversation caches below keeps."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > size:
        kept.popitem(last=False)


# Only texts that carry no personal data are kept: at most one digit (no NIK, phone number, code,
# date or ticket reference; "2" and "dosis 3" are kept), no "@" (e-mail), short. What remains
# repeats a lot: "halo", "ya", "menu", "batal", "2", "cek status vaksin".
def cacheable(text: Any) -> bool:
    return (isinstance(text, str) and 0 < len(text) <= 80 and "@" not in text
            and sum(ch.isdigit() for ch in text) <= 1)


def _cache_parses(size: int) -> None:
    """Citizens type the same short messages over and over ("halo", "ya", "batal", "cek
    status", "2"). The NLU result depends on the model and the text alone, so keep the last `size`
    results (NLU_CACHE_SIZE, 0 turns this off) for texts without personal data and reuse a copy."""
    from rasa.core.processor import MessageProcessor

    original = MessageProcessor._parse_message_with_graph
    cache: OrderedDict[tuple[str, str, bool], dict[str, Any]] = OrderedDict()

    @functools.wraps(original)
    def parse(self: MessageProcessor, message: Any, tracker: Any, only_output_properties: bool = True) -> dict[str, Any]:
        text = message.text
        if not cacheable(text):
            return original(self, message, tracker, only_output_properties)
        key = (self.model_filename, text, only_output_properties)
        found = cache.get(key)
        if found is None:
            found = original(self, message, tracker, only_output_properties)
            keep_last(cache, key, copy.deepcopy(found), size)
            return found
        cache.move_to_end(key)
        return copy.deepcopy(found)

    _patch(MessageProcessor, "_parse_message_with_graph", parse)


def dumps(value: Any) -> str:
    """JSON text, as json.dumps writes it for what Rasa sends, ten times faster (orjson: compact,
    UTF-8 rather than \\u escapes, both the same JSON to a reader)."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    """dumps() as UTF-8 bytes. Keys that are not strings and numpy values are rare: orjson's
    options for them (which double its time) are used only when plain orjson refuses a value;
    what orjson refuses even then (an integer beyond 64 bits, say) goes to json.dumps."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value).encode()


# An event's JSON as the tracker store wrote it (or read it), kept on the event with the
# timestamp it had then: Rasa gives an event a new timestamp when it logs one that a form had
# put on a temporary copy of the conversation first, and that must not be sent stale.
_STORED_JSON = "_json_as_stored"


def remember_json(event: Any, text: str) -> None:
    """The event's JSON as stored (by backend/tracker_store.py), for the calls to the action
    server that send it again (_action_calls_with_stored_events)."""
    event.__dict__[_STORED_JSON] = (event.timestamp, text)


def stored_json(event: Any) -> Optional[str]:
    kept = event.__dict__.get(_STORED_JSON)
    if kept is None or kept[0] != event.timestamp:
        return None
    return kept[1]


class ActionCall(dict):
    """Rasa's call to the action server (the same dict), with its JSON written already."""

    body: bytes


def _action_calls_with_stored_events() -> None:
    """Each call to the action server sends the whole conversation, so Rasa turned every event
    into a dict and JSON again for every call (two or three per message): a conversation of 100
    events is 37 kB. The events the tracker store has stored carry the JSON it wrote for them;
    those go into the body as that JSON (orjson.Fragment), only the events of the current
    message are written anew. The dict is Rasa's, the JSON the same. A body orjson cannot write
    goes Rasa's way."""
    from rasa.core.actions.action import RemoteAction

    original = RemoteAction._action_call_format

    @functools.wraps(original)
    def _action_call_format(self: RemoteAction, tracker: Any, domain: Any) -> dict[str, Any]:
        state = state_without_events(tracker)
        events = []
        for event in tracker.events:
            text = stored_json(event)
            events.append(event.as_dict() if text is None else orjson.Fragment(text))
        state["events"] = events
        call = ActionCall(original(self, _NoEvents(tracker, state), domain))
        try:
            call.body = orjson.dumps(call)
        except TypeError:
            return original(self, tracker, domain)
        return call

    _patch(RemoteAction, "_action_call_format", _action_call_format)


def state_without_events(tracker: Any) -> dict[str, Any]:
    """tracker.current_state(EventVerbosity.NONE), the same dict, but the active loop's dict
    holds its trigger message itself rather than a deep copy (dataclasses.asdict copied that
    message's whole parse data at every call to the action server: 3% of the process); the
    call's dict is written to JSON at once, so a copy protects nothing."""
    loop = tracker.active_loop
    return {
        "sender_id": tracker.sender_id,
        "slots": tracker.current_slot_values(),
        "latest_message": tracker._latest_message_data(),
        "latest_event_time": tracker.events[-1].timestamp if len(tracker.events) > 0 else None,
        FOLLOWUP_ACTION: tracker.followup_action,
        "paused": tracker.is_paused(),
        "events": None,
        "latest_input_channel": tracker.get_latest_input_channel(),
        ACTIVE_LOOP: {field.name: getattr(loop, field.name) for field in dataclasses.fields(loop)} if loop else {},
        "latest_action": tracker.latest_action,
        "latest_action_name": tracker.latest_action_name,
    }


class _NoEvents:
    """A tracker for Rasa's _action_call_format that gives the state already made."""

    def __init__(self, tracker: Any, state: dict[str, Any]) -> None:
        self.sender_id = tracker.sender_id
        self._state = state

    def current_state(self, event_verbosity: Any) -> dict[str, Any]:
        return self._state


def _keep_connections_open() -> None:
    """Rasa opens a new HTTP session, and so a new TCP connection, for every call to the action
    server (two or three per message), and closes it after the reply; at 16 users that was a
    sixth of the Rasa process's time, with as much again on the action server's side. Keep one
    session per endpoint and event loop, with its connections kept alive for 2 s (less than the
    5 s after which the action server's Sanic closes an idle one, so a request never goes out
    on a connection the server is closing). Everything else is Rasa's EndpointConfig.request:
    the same headers, parameters, errors and timeout. The request body (the whole conversation)
    is written by orjson: json.dumps of it was half the cost of a call. A POST of that body to a
    plain http:// server (the calls to the action server) goes through rasa_server/http_client.py,
    a fifth of aiohttp's CPU per call; anything else through aiohttp."""
    import asyncio
    import ssl

    import aiohttp
    from aiohttp.client_exceptions import ContentTypeError
    from rasa.core import run
    from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT
    from rasa.shared.exceptions import FileNotFoundException
    from rasa.utils.endpoints import ClientResponseError, EndpointConfig, concat_url

    from rasa_server import http_client

    kept: dict[tuple[int, int], aiohttp.ClientSession] = {}
    lean = http_client.Client()

    def session_for(endpoint: EndpointConfig) -> aiohttp.ClientSession:
        key = (id(endpoint), id(asyncio.get_running_loop()))
        session = kept.get(key)
        if session is None or session.closed:
            # What Rasa's endpoint.session() builds, with a connector that keeps connections.
            auth = (aiohttp.BasicAuth(endpoint.basic_auth["username"], endpoint.basic_auth["password"])
                    if endpoint.basic_auth else None)
            session = aiohttp.ClientSession(
                headers=endpoint.headers, auth=auth, timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2))
            kept[key] = session
        return session

    async def request(self: EndpointConfig, method: str = "post", subpath: Optional[str] = None,
                      content_type: Optional[str] = "application/json", compress: bool = False,
                      **kwargs: Any) -> Optional[Any]:
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if "headers" in kwargs:
            headers.update(kwargs.pop("headers"))
        if self.headers:
            headers.update(self.headers)
        if "json" in kwargs:  # written here, as bytes (aiohttp would write a str, then encode it)
            call = kwargs.pop("json")
            kwargs["data"] = call.body if isinstance(call, ActionCall) else dumps_bytes(call)
        sslcontext = None
        if self.cafile:
            try:
                sslcontext = ssl.create_default_context(cafile=self.cafile)
            except FileNotFoundError as e:
                raise FileNotFoundException(f"Failed to find certificate file, "
                                            f"'{os.path.abspath(self.cafile)}' does not exist.") from e
        url = concat_url(self.url, subpath)
        params = self.combine_parameters(kwargs)
        if (method.lower() == "post" and http_client.handles(url) and not compress and sslcontext is None
                and not self.basic_auth and isinstance(kwargs.get("data"), bytes) and set(kwargs) <= {"data", "timeout"}):
            timeout = kwargs.get("timeout", DEFAULT_REQUEST_TIMEOUT)
            status, reason, response_headers, body = await lean.post(
                url, kwargs["data"], headers, params, getattr(timeout, "total", timeout))
            if status >= 400:
                raise ClientResponseError(status, reason, body)
            return http_client.read_json(response_headers, body)
        async with session_for(self).request(
            method, url, headers=headers, params=params, compress=compress, ssl=sslcontext, **kwargs,
        ) as response:
            if response.status >= 400:
                raise ClientResponseError(response.status, response.reason, await response.content.read())
            try:
                return await response.json()
            except ContentTypeError:
                return None

    original_close = run.close_resources

    async def close_resources(app: Any, loop: Any) -> None:
        for key in [k for k in kept if k[1] == id(loop)]:
            await kept.pop(key).close()
        await lean.close(loop)
        await original_close(app, loop)

    _patch(EndpointConfig, "request", request)
    _patch(run, "close_resources", close_resources)


def _format_rule_states_only_for_debug_logs() -> None:
    """At every prediction the RulePolicy formats the whole conversation's states into text,
    and deep-copies that text, for a debug log line that is dropped unless Rasa runs with
    --debug: 4% of a message. Format them only when that line is written."""
    from rasa.core.policies import rule_policy

    debug_log = logging.getLogger(rule_policy.__name__)
    original = rule_policy.RulePolicy.format_tracker_states

    def format_tracker_states(states: list[dict]) -> str:
        return original(states) if debug_log.isEnabledFor(logging.DEBUG) else ""

    _patch(rule_policy.RulePolicy, "format_tracker_states", staticmethod(format_tracker_states))


MEMORY_LAST_ACTION = re.compile(r"prev_action: \{action_name: ([^,}]+)\}")
MEMORY_INTENT = re.compile(r"user: \{[^}]*?intent: ([^,}]+)")


def memory_key_end(key: str, compressed: bool) -> tuple[Optional[str], Optional[str]]:
    """The last action and intent of the last state of a MemoizationPolicy lookup key (its
    states as json.dumps(sort_keys=True) without quotes, maybe zlib-compressed and base64).
    States are separated by "}, {", which a state itself never contains."""
    text = zlib.decompress(base64.b64decode(key)).decode("utf-8") if compressed else key
    last = text[text.rfind("}, {") + 3:] if "}, {" in text else text[1:]
    action, intent = MEMORY_LAST_ACTION.search(last), MEMORY_INTENT.search(last)
    return (action.group(1) if action else None), (intent.group(1) if intent else None)


def _memoization_recalls_only_what_can_match() -> None:
    """The AugmentedMemoizationPolicy (issue 17), when the conversation's last turns match no
    story, tries ever shorter pasts of it, replaying the tracker for each: most of its cost, for
    the two predictions in three that match nothing (tools/policy_bench.py). Every shorter past
    keeps the last action, and after action_listen the message's intent; a prediction whose
    last state ends no remembered key in them cannot be recalled, so it is not tried."""
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

    _patch(AugmentedMemoizationPolicy, "recall", recall)


def _rules_indexed_by_their_last_state() -> None:
    """To find the rules that apply, the RulePolicy checks every rule against the conversation's
    newest state, then the rules left against each older state, back to the conversation's
    start: 51 rules twice per user message (once on its text, once on its intent), 6% of the
    process at 16 users. Here:
    - the newest state is checked only against the rules that can match it: a rule whose last
      state names a previous action or an intent cannot match a state with another one (Rasa's
      own check fails on that value), so each lookup is indexed once by those two names;
    - the older states are checked only as far back as the longest rule left reaches: a rule
      with fewer states than the turns looked back passes those checks unchecked.
    The rest is Rasa's check itself (`_is_rule_applicable`), and a newest state with no previous
    action (a conversation's first) is checked against every rule, as Rasa does."""
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

    _patch(RulePolicy, "_get_possible_keys", _get_possible_keys)


class _Fold:
    """What is kept of one conversation's applied events between calls (see _Folds)."""

    __slots__ = ("events", "loop_names", "applied")

    def __init__(self) -> None:
        self.events: list = []  # the tracker's events folded into `applied`
        self.loop_names: set = set()
        self.applied: list = []  # DialogueStateTracker.applied_events() of `events`


class _History:
    """What is kept of one conversation's states between predictions (see _Histories)."""

    __slots__ = ("replayed", "replay", "states", "checkpoints")

    def __init__(self) -> None:
        self.replayed: list = []  # the applied events `replay` went through
        self.replay: Any = None
        self.states: list = []  # before each action of `replayed`, then after its last event
        self.checkpoints: list[tuple[int, Any, int]] = []  # (position, replay there, states before)


def _same_prefix(old: list, new: Any) -> int:
    """How many first items of `old` are the very objects at the start of `new`."""
    count = 0
    for a, b in zip(old, new):
        if a is not b:
            break
        count += 1
    return count


def _snapshot(tracker: Any) -> Any:
    """A copy of a replayed tracker that later events applied to either leave the other as it
    was: what events change in place is the list of events, the slots and the active loop (the
    latest action is replaced, not changed, but copied all the same)."""
    twin = copy.copy(tracker)
    twin.events = tracker._create_events(list(tracker.events))
    twin.slots = {name: copy.copy(slot) for name, slot in tracker.slots.items()}
    twin.active_loop = copy.copy(tracker.active_loop)
    twin.latest_action = copy.copy(tracker.latest_action)
    return twin


class _Folds:
    """Rasa finds a conversation's applied events (DialogueStateTracker.applied_events: the
    events with undone ones, earlier sessions and a form's earlier turns taken out) by folding
    every event from the first, several times a message: to check the session, to find the
    last event of a kind, to make the RulePolicy's states. Here the fold of the last call is
    kept per conversation (`size` of them) and goes on with the new events only; when the
    events folded before are not the first of the tracker's (another tracker, a full window of
    max_event_history), or a new event names a form not seen before (a loop's name decides how
    the earlier runs of that action fold), it starts from the first event, as Rasa does. The
    fold repeats Rasa 3.6.21's loop with its own helpers; tests/test_speedups.py checks the
    result after every kind of event."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.kept: OrderedDict[tuple, _Fold] = OrderedDict()

    @staticmethod
    def _fold(tracker: Any, events: Any, loop_names: set, applied: list) -> None:
        from rasa.shared.core.events import (ActionExecuted, ActionReverted, Restarted, SessionStarted,
                                             UserUttered, UserUtteranceReverted)

        for event in events:
            if isinstance(event, (Restarted, SessionStarted)):
                applied.clear()
            elif isinstance(event, ActionReverted):
                tracker._undo_till_previous(ActionExecuted, applied)
            elif isinstance(event, UserUtteranceReverted):
                tracker._undo_till_previous(UserUttered, applied)
                tracker._undo_till_previous(ActionExecuted, applied)
            elif (isinstance(event, ActionExecuted) and event.action_name in loop_names
                  and not tracker._first_loop_execution_or_unhappy_path(event.action_name, applied)):
                tracker._undo_till_previous_loop_execution(event.action_name, applied)
            else:
                applied.append(event)

    def applied_events(self, tracker: Any) -> list:
        """The tracker's applied events, as Rasa's DialogueStateTracker.applied_events finds
        them; the list is kept: callers that change it must copy it."""
        from rasa.shared.core.events import ActiveLoop

        key = (tracker.sender_id, tracker.events.maxlen)
        fold = self.kept.pop(key, None) or _Fold()
        events = tracker.events
        folded = len(fold.events)
        new = list(itertools.islice(events, folded, None)) if folded <= len(events) else None
        new_names = {e.name for e in new or () if isinstance(e, ActiveLoop) and e.name}
        if new is None or not new_names <= fold.loop_names or _same_prefix(fold.events, events) < folded:
            # From the start: a loop name decides how the earlier runs of that action fold.
            fold.loop_names = {e.name for e in events if isinstance(e, ActiveLoop) and e.name}
            fold.applied, fold.events, new = [], [], list(events)
        self._fold(tracker, new, fold.loop_names, fold.applied)
        fold.events.extend(new)
        keep_last(self.kept, key, fold, self.size)
        return fold.applied


class _Histories:
    """The RulePolicy predicts from the states of the whole conversation. Rasa makes them at
    every prediction (several per message, each on a longer conversation) from the start: it
    replays the applied events into a new tracker and reads a state before each action. That
    was a tenth of a message at 16 users, with the fold into applied events (see _Folds).
    Here, per conversation (`size` of them), what the last prediction made is kept, and the
    replay goes on with the applied events that are new; where applied events were taken out
    (a form's turn folded into its previous run, an undo), it restarts from the last copy of it
    kept before an `action_listen` at or before the first change. Anything else (a tracker
    whose earlier events are other objects) starts from the beginning, as Rasa does.
    tests/test_speedups.py compares the states with Rasa's after every kind of event."""

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
        same = _same_prefix(history.replayed, applied)
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
                    history.checkpoints.append((position, _snapshot(replay), len(states)))
                    del history.checkpoints[:-self.CHECKPOINTS]
                states.append(domain._clean_state(domain.get_active_state(replay, omit_unset_slots)))
            replay.update(event)
        states.append(domain._clean_state(domain.get_active_state(replay, omit_unset_slots)))
        history.replayed, history.replay, history.states = applied, replay, states  # a list of its own
        keep_last(self.kept, key, history, self.size)
        return states


def _applied_events_from_kept_folds(size: int) -> None:
    """DialogueStateTracker.applied_events from _Folds (Rasa's own for its subclasses, such as
    the training trackers); each caller gets its own list, as from Rasa."""
    from rasa.shared.core.trackers import DialogueStateTracker

    folds = _Folds(size)
    original = DialogueStateTracker.applied_events

    @functools.wraps(original)
    def applied_events(self: DialogueStateTracker) -> list:
        if type(self) is not DialogueStateTracker:
            return original(self)
        return list(folds.applied_events(self))

    _patch(DialogueStateTracker, "applied_events", applied_events)


def _copy_states(states: list) -> list:
    """States are dicts of dicts of immutable values; the callers delete keys at the second
    level, so a copy of two levels is theirs."""
    return [{k: dict(v) if isinstance(v, dict) else v for k, v in state.items()} for state in states]


def _rule_states_incrementally(size: int) -> None:
    """The RulePolicy's states, within one prediction computed once, across predictions of a
    conversation extended by the new events only (_Histories).
    - To predict after a user message, the RulePolicy turns the whole conversation into states
      twice: once to look for a rule on the message's text, once on its intent. The two differ
      only in what is then removed from the last state: the states are made once per
      prediction and each caller gets its own copy.
    - Rasa's own computation is kept for every other use (training; rule-only turns ignored)."""
    import contextvars

    from rasa.core.featurizers.tracker_featurizers import TrackerFeaturizer
    from rasa.core.policies.rule_policy import RulePolicy

    memo: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("rule_states", default=None)
    histories = _Histories(size)
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

    _patch(TrackerFeaturizer, "_create_states", staticmethod(_create_states))
    _patch(RulePolicy, "_predict", _predict)


def _tracker_copies_from_kept_replays(size: int) -> None:
    """Before every action, Rasa's processor hands the action a copy of the conversation's
    tracker, and DialogueStateTracker.copy() makes it by replaying every event into a new
    tracker (5% of a message at 16 users, several copies a message). While the processor runs
    an action, copies are made from a replay kept per conversation (`size` of them) that only
    the new events are applied to, handed out as a _snapshot of it: what a replay of all events
    gives, since the kept replay went through the same events in the same order. A tracker
    whose earlier events are not the kept ones gets Rasa's copy, which is then kept."""
    from rasa.core.processor import MessageProcessor
    from rasa.shared.core.trackers import DialogueStateTracker

    kept: OrderedDict[tuple, tuple[list, Any]] = OrderedDict()
    original_copy = DialogueStateTracker.copy
    run_action = MessageProcessor._run_action

    def copy_tracker(self: DialogueStateTracker) -> DialogueStateTracker:
        if not RUNNING_AN_ACTION.get() or type(self) is not DialogueStateTracker:
            return original_copy(self)
        key = (self.sender_id, self._max_event_history, self.is_rule_tracker)
        events, replay = kept.pop(key, (None, None))
        if events is not None and len(events) <= len(self.events) and _same_prefix(events, self.events) == len(events):
            for event in itertools.islice(self.events, len(events), None):
                events.append(event)
                replay.update(event)
            twin = _snapshot(replay)
        else:
            twin = original_copy(self)
            events, replay = list(self.events), _snapshot(twin)
        keep_last(kept, key, (events, replay), size)
        return twin

    @functools.wraps(run_action)
    async def _run_action(self, *args, **kwargs):
        token = RUNNING_AN_ACTION.set(True)
        try:
            return await run_action(self, *args, **kwargs)
        finally:
            RUNNING_AN_ACTION.reset(token)

    _patch(DialogueStateTracker, "copy", copy_tracker)
    _patch(MessageProcessor, "_run_action", _run_action)


YOUNG_COLLECTION_THRESHOLD = 20_000


def _garbage_collection_without_the_start_up_heap() -> None:
    """Python's full garbage collection walks every object the process holds, and the Rasa
    process holds millions from start-up on (TensorFlow, the models, the domain) that live as
    long as it does: at 16 users it ran every ~10 s and stopped every conversation of the
    process for 0.3-0.5 s each time (measured with gc.callbacks), which is what the slowest
    replies were made of. Once the model is loaded, the objects made so far are collected once
    and then frozen (gc.freeze: left out of every later collection); what conversations create
    is collected as before, the youngest objects after 20,000 allocations instead of 700 (a
    message makes thousands: side by side, 0.5-1.3 ms less CPU per message). GC_FREEZE=0
    turns this off."""
    import gc

    from rasa.core import run

    original = run.load_agent_on_start

    @functools.wraps(original)
    async def load_agent_on_start(*args: Any, **kwargs: Any) -> Any:
        agent = await original(*args, **kwargs)
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
        logger.debug("%d objects of the start-up left out of garbage collection", gc.get_freeze_count())
        return agent

    _patch(run, "load_agent_on_start", load_agent_on_start)


def _empty_domain_built_once() -> None:
    """Every parse is checked against the domain unless the domain is empty, and
    Domain.is_empty() built a whole empty Domain to compare with, every time: 2% of a message.
    The empty domain's dict is built once."""
    from rasa.shared.core.domain import Domain

    empty = Domain.empty().as_dict()

    def is_empty(self: Domain) -> bool:
        return self.as_dict() == empty

    _patch(Domain, "is_empty", is_empty)


def _run_graphs_in_order() -> None:
    """Each message runs the model's graph (NLU, then a prediction per action) through dask's
    synchronous scheduler, which re-derives the minimal graph, rebuilds the task dict and
    schedules it on every call: 7% of a message at 16 users, for a graph of a dozen nodes run in
    one thread anyway. Run the same nodes in the same dependency order directly, the order worked
    out once per set of targets. Each node gets exactly what dask gave it: its parents' (name,
    output) pairs, an input's (name, value), the bare name of what nothing provides."""
    from rasa.engine.exceptions import GraphRunError
    from rasa.engine.runner.dask import DaskGraphRunner

    def plan(runner: DaskGraphRunner, targets: tuple[str, ...]) -> list[tuple[str, Any, tuple[str, ...]]]:
        plans = runner.__dict__.setdefault("_plans", {})
        if targets not in plans:
            schema = runner._graph_schema.minimal_graph_schema(list(targets))
            order: list[str] = []

            def visit(name: str, path: tuple[str, ...] = ()) -> None:
                if name in order or name not in schema.nodes:
                    return
                if name in path:
                    raise GraphRunError(f"The graph has a cycle through '{name}'.")
                for parent in schema.nodes[name].needs.values():
                    visit(parent, path + (name,))
                order.append(name)

            for target in targets:
                visit(target)
            plans[targets] = [(name, runner._instantiated_nodes[name], tuple(schema.nodes[name].needs.values()))
                              for name in order]
        return plans[targets]

    def run(self: DaskGraphRunner, inputs: Optional[dict[str, Any]] = None,
            targets: Optional[list[str]] = None) -> dict[str, Any]:
        run_targets = tuple(targets if targets else self._graph_schema.target_names)
        steps = plan(self, run_targets)
        results: dict[str, Any] = {}
        for name, value in (inputs or {}).items():
            if isinstance(value, str) and (value in self._graph_schema.nodes):
                raise GraphRunError(
                    f"Input value '{value}' clashes with a node name. Make sure that none of the input "
                    f"names passed to the `run` method are the same as node names in the graph schema.")
            results[name] = (name, value)
        try:
            for name, node, needs in steps:
                results[name] = node(*(results.get(parent, parent) for parent in needs))
            return dict(results[target] for target in run_targets)
        except RuntimeError as e:
            raise GraphRunError("Error running runner.") from e

    _patch(DaskGraphRunner, "run", run)


def _build_models_eagerly() -> None:
    """Loading DIET or the ResponseSelector trains them for one step on one example, only to
    create their weights before the trained ones are read in; Rasa compiles that step into a
    TensorFlow graph first, which is most of the 30 s a start takes. Run that one step eagerly
    instead (same weights created, then overwritten as before); prediction is compiled exactly
    as Rasa does it (unless the component's config asks for eager mode, as before)."""
    import tensorflow as tf
    from rasa.utils.tensorflow.constants import LEARNING_RATE, RUN_EAGERLY
    from rasa.utils.tensorflow.data_generator import RasaBatchDataGenerator
    from rasa.utils.tensorflow.models import RasaModel

    def load(cls, model_file_name, model_data_example, predict_data_example=None,
             finetune_mode=False, *args, **kwargs):
        # Rasa's RasaModel.load, but for run_eagerly during the building step.
        model = cls(*args, **kwargs)
        config = kwargs.get("config", {})
        model.compile(optimizer=tf.keras.optimizers.Adam(config.get(LEARNING_RATE, 0.001)), run_eagerly=True)
        model.fit(RasaBatchDataGenerator(model_data_example, batch_size=1), verbose=False)
        model.load_weights(model_file_name)
        model.run_eagerly = config.get(RUN_EAGERLY)
        if not finetune_mode and predict_data_example:
            model.run_inference(predict_data_example)
        return model

    _patch(RasaModel, "load", classmethod(load))


def _predict_through_the_concrete_function() -> None:
    """DIET and the ResponseSelector predict through a tf.function with a fixed input signature,
    so it has one compiled (concrete) function. Calling the tf.function looks that function up
    again on every call, from the inputs' structure, types and shapes: for a 5-word message that
    lookup cost more than running the network (a third of an uncached parse). Once Rasa has made
    the function, call the concrete one directly, as the tf.function does after its lookup:
    inputs converted the same way (each to its spec's dtype), checked against the same
    signature; anything else (eager mode, inputs that do not fit) goes Rasa's way, for Rasa's
    own result or error."""
    import weakref

    import tensorflow as tf
    from rasa.shared.constants import DIAGNOSTIC_DATA
    from rasa.utils.tensorflow import models

    original = models.RasaModel._rasa_predict
    kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (function, specs)

    @functools.wraps(original)
    def _rasa_predict(self: models.RasaModel, batch_in: Any) -> dict[str, Any]:
        found = kept.get(self)
        if found is None or self._run_eagerly or found[0] is not self._tf_predict_step:
            outputs = original(self, batch_in)
            if not self._run_eagerly and self._tf_predict_step is not None:
                step = self._tf_predict_step
                kept[self] = (step, step.get_concrete_function(),
                              tuple(tf.nest.flatten(step.input_signature)))
            return outputs
        _, function, specs = found
        if not isinstance(batch_in, (tuple, list)) or len(batch_in) != len(specs):
            return original(self, batch_in)
        tensors = []
        for value, spec in zip(batch_in, specs):
            tensor = tf.convert_to_tensor(value, dtype_hint=spec.dtype)
            if not spec.is_compatible_with(tensor):
                return original(self, batch_in)
            tensors.append(tensor)
        self._training = False
        outputs = models.tf_utils.sync_to_numpy_or_python_type(function._call_flat(tensors, function.captured_inputs))
        if DIAGNOSTIC_DATA in outputs:
            outputs[DIAGNOSTIC_DATA] = self._empty_lists_to_none_in_dict(outputs[DIAGNOSTIC_DATA])
        return outputs

    _patch(models.RasaModel, "_rasa_predict", _rasa_predict)


def hstack_coo(left: Any, right: Any) -> Any:
    """scipy.sparse.hstack([left, right]) for two COO matrices with as many rows: the same
    matrix (values, dtype, index dtype, order of entries), made as scipy's bmat makes it, without
    its general block machinery."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse._sputils import get_index_dtype, upcast

    shape = (left.shape[0], left.shape[1] + right.shape[1])
    n_left, n_right = left.nnz, right.nnz
    data = np.empty(n_left + n_right, dtype=upcast(left.dtype, right.dtype))
    index_dtype = get_index_dtype(maxval=max(shape))
    row = np.empty(n_left + n_right, dtype=index_dtype)
    col = np.empty(n_left + n_right, dtype=index_dtype)
    data[:n_left] = left.data
    data[n_left:] = right.data
    np.add(left.row, 0, out=row[:n_left], dtype=index_dtype)
    np.add(right.row, 0, out=row[n_left:], dtype=index_dtype)
    np.add(left.col, 0, out=col[:n_left], dtype=index_dtype)
    np.add(right.col, left.shape[1], out=col[n_left:], dtype=index_dtype)
    return coo_matrix((data, (row, col)), shape=shape)


def _sparse_features_joined_directly() -> None:
    """The NLU joins each message's sparse features (one matrix per featurizer) with
    scipy.sparse.hstack, whose general block machinery cost 15% of an uncached parse for two
    small matrices at a time. Two COO matrices (what the featurizers make) are joined directly,
    into the same matrix (hstack_coo); anything else goes through hstack as before."""
    from rasa.shared.nlu.training_data.features import Features

    original = Features._combine_sparse_features

    @functools.wraps(original)
    def _combine_sparse_features(self: Features, additional_features: Features) -> None:
        left, right = self.features, additional_features.features
        if left.format != "coo" or right.format != "coo" or left.shape[0] != right.shape[0]:
            return original(self, additional_features)
        self.features = hstack_coo(left, right)
        self._cached_fingerprint = None

    _patch(Features, "_combine_sparse_features", _combine_sparse_features)


# Where each use of the copy module is a deep copy of a value handed to a debug log line
# (tests/test_speedups.py checks that in their source).
# rasa.core.policies.memoization: the AugmentedMemoizationPolicy (issue 17) deep-copies the states
# for two debug lines at every prediction, most of its cost there (tools/policy_bench.py).
DEBUG_COPY_MODULES = ("rasa.core.processor", "rasa.core.actions.forms", "rasa.core.policies.rule_policy",
                      "rasa.core.policies.memoization")


class _CopyForDebugLogs:
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


def _copies_for_debug_logs_only_when_logged() -> None:
    """Rasa deep-copies the events of every action, the parse of every message and more, only to
    hand the copies to debug log lines (structlog's arguments are made before it drops the line):
    2-3% of a message at 16 users. In the modules that do only that with the copy module, copies
    are made when their debug lines are logged."""
    import importlib

    for name in DEBUG_COPY_MODULES:
        _patch(importlib.import_module(name), "copy", _CopyForDebugLogs(name))
