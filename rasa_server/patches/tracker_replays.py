"""Applied events and tracker copies extended by the new events only.

Replaces `DialogueStateTracker.applied_events` and `DialogueStateTracker.copy`, and wraps
`MessageProcessor._run_action` (private) to know when an action runs.
Why: Rasa finds a conversation's applied events (the events with undone ones, earlier sessions
and a form's earlier turns taken out) by folding every event from the first, several times a
message (the session check, `get_last_event_for`, the RulePolicy's states); and before every
action the processor hands the action a copy of the tracker, made by replaying every event into
a new one. Here, per conversation (REPLAY_CACHE_SIZE of them, default 512; 0 turns this topic
off), the last fold and the last replay are kept and go on with the new events only:
- Folds: when the events folded before are not the first of the tracker's (another tracker, a
  full window of max_event_history), or a new event names a form not seen before (a loop's name
  decides how the earlier runs of that action fold), the fold starts from the first event, as
  Rasa does. The fold repeats Rasa 3.6.21's loop with its own helpers; each caller gets its own
  list. Subclasses (the training trackers) get Rasa's own.
- Copies, only while the processor runs an action (RUNNING_AN_ACTION): made from the kept replay
  and handed out as a snapshot of it, what a replay of all events gives, since the kept replay
  went through the same events in the same order. A tracker whose earlier events are not the
  kept ones gets Rasa's copy, which is then kept. Outside of actions Rasa copies as before.
Rasa internals touched: `DialogueStateTracker.applied_events`, `copy`, `_undo_till_previous`,
`_undo_till_previous_loop_execution`, `_first_loop_execution_or_unhappy_path`,
`_create_events`, `_max_event_history`, `is_rule_tracker`, `update`, the tracker's `slots`,
`active_loop` and `latest_action` attributes; `MessageProcessor._run_action`.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import itertools
import os
from collections import OrderedDict
from typing import Any

from rasa_server.jsonio import keep_last
from rasa_server.patches import patch

# Set while Rasa's processor runs an action: only then are copies made from kept replays.
RUNNING_AN_ACTION: contextvars.ContextVar[bool] = contextvars.ContextVar("running_an_action", default=False)


def replay_cache_size() -> int:
    return int(os.environ.get("REPLAY_CACHE_SIZE", "512"))


def install() -> None:
    size = replay_cache_size()
    if size > 0:
        applied_events_from_kept_folds(size)
        tracker_copies_from_kept_replays(size)


class _Fold:
    """What is kept of one conversation's applied events between calls (see Folds)."""

    __slots__ = ("events", "loop_names", "applied")

    def __init__(self) -> None:
        self.events: list = []  # the tracker's events folded into `applied`
        self.loop_names: set = set()
        self.applied: list = []  # DialogueStateTracker.applied_events() of `events`


def same_prefix(old: list, new: Any) -> int:
    """How many first items of `old` are the very objects at the start of `new`."""
    count = 0
    for a, b in zip(old, new):
        if a is not b:
            break
        count += 1
    return count


def snapshot(tracker: Any) -> Any:
    """A copy of a replayed tracker that later events applied to either leave the other as it
    was: what events change in place is the list of events, the slots and the active loop (the
    latest action is replaced, not changed, but copied all the same)."""
    twin = copy.copy(tracker)
    twin.events = tracker._create_events(list(tracker.events))
    twin.slots = {name: copy.copy(slot) for name, slot in tracker.slots.items()}
    twin.active_loop = copy.copy(tracker.active_loop)
    twin.latest_action = copy.copy(tracker.latest_action)
    return twin


class Folds:
    """The last fold of each conversation's events into its applied events (`size` of them),
    going on with the new events only (see the module's docstring for when it starts again);
    tests/test_patches_tracker_replays.py checks the result after every kind of event."""

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
        if new is None or not new_names <= fold.loop_names or same_prefix(fold.events, events) < folded:
            # From the start: a loop name decides how the earlier runs of that action fold.
            fold.loop_names = {e.name for e in events if isinstance(e, ActiveLoop) and e.name}
            fold.applied, fold.events, new = [], [], list(events)
        self._fold(tracker, new, fold.loop_names, fold.applied)
        fold.events.extend(new)
        keep_last(self.kept, key, fold, self.size)
        return fold.applied


def applied_events_from_kept_folds(size: int) -> None:
    """DialogueStateTracker.applied_events from Folds (Rasa's own for its subclasses, such as
    the training trackers); each caller gets its own list, as from Rasa."""
    from rasa.shared.core.trackers import DialogueStateTracker

    folds = Folds(size)
    original = DialogueStateTracker.applied_events

    @functools.wraps(original)
    def applied_events(self: DialogueStateTracker) -> list:
        if type(self) is not DialogueStateTracker:
            return original(self)
        return list(folds.applied_events(self))

    patch(DialogueStateTracker, "applied_events", applied_events)


def tracker_copies_from_kept_replays(size: int) -> None:
    """DialogueStateTracker.copy() from a replay kept per conversation (`size` of them) while
    the processor runs an action (see the module's docstring)."""
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
        if events is not None and len(events) <= len(self.events) and same_prefix(events, self.events) == len(events):
            for event in itertools.islice(self.events, len(events), None):
                events.append(event)
                replay.update(event)
            twin = snapshot(replay)
        else:
            twin = original_copy(self)
            events, replay = list(self.events), snapshot(twin)
        keep_last(kept, key, (events, replay), size)
        return twin

    @functools.wraps(run_action)
    async def _run_action(self, *args, **kwargs):
        token = RUNNING_AN_ACTION.set(True)
        try:
            return await run_action(self, *args, **kwargs)
        finally:
            RUNNING_AN_ACTION.reset(token)

    patch(DialogueStateTracker, "copy", copy_tracker)
    patch(MessageProcessor, "_run_action", _run_action)
