"""Speed patches of Rasa 3.6.21's internals, one module per topic, each switchable.

Every module here replaces a piece of Rasa that repeats work per message; each opens with what
it replaces, why, and which of Rasa's internals it touches (docs/performance.md has the
measurements). Rasa has no setting for any of them, so they are patches: written for one Rasa
version, refused on another, and revisited on every upgrade.

`RASA_PATCHES` chooses them: `all` (the default), `none` (stock Rasa, which `make test` also
runs the test stories and the REST flows on, to show that the patches change speed only), or a
comma-separated list of the names in TOPICS. Importing this package imports no Rasa: the topic
modules are imported by install().
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Mapping

logger = logging.getLogger(__name__)

RASA_VERSION = "3.6.21"
# In the order they are installed (each is independent of the others).
TOPICS = (
    "action_reply_check",
    "event_classes",
    "eager_build",
    "concrete_function",
    "sparse_features",
    "kept_connections",
    "stored_events_json",
    "graph_order",
    "rule_index",
    "memoization_skip",
    "rule_states",
    "tracker_replays",
    "empty_domain",
    "debug_copies",
    "gc_freeze",
    "nlu_cache",
)
# Switches of single patches before RASA_PATCHES; now names in it (docs/performance.md).
FOLDED_SWITCHES = {"GC_FREEZE": "gc_freeze", "MEMOIZATION_SKIP": "memoization_skip"}

_ABSENT = object()
# What install() replaced, in order: (topic, class or module, attribute, what its __dict__ held).
_originals: list[tuple[str, Any, str, Any]] = []
_installed: list[str] = []
_installing: list[str] = []  # the topic being installed, for patch()


class SelectionError(ValueError):
    """RASA_PATCHES names something that is not a patch; the message is one line."""


def parse(value: str | None) -> tuple[str, ...]:
    """The topics RASA_PATCHES selects, in install order. Unset or empty: all."""
    text = (value or "all").strip()
    if text == "all":
        return TOPICS
    if text == "none":
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TOPICS]
    if unknown or not names:
        raise SelectionError(f"RASA_PATCHES: unknown patch {', '.join(unknown) or repr(text)}; "
                             f"use all, none or a comma-separated list of: {', '.join(TOPICS)}")
    return tuple(topic for topic in TOPICS if topic in names)


def selection_from(env: Mapping[str, str]) -> tuple[str, ...]:
    """RASA_PATCHES from the environment. The old single switches (GC_FREEZE=0,
    MEMOIZATION_SKIP=0) are refused with the RASA_PATCHES that says the same thing, rather than
    silently ignored."""
    for switch, topic in FOLDED_SWITCHES.items():
        if switch in env:
            raise SelectionError(f"{switch} is replaced by RASA_PATCHES (e.g. RASA_PATCHES=all minus "
                                 f"{topic}: {','.join(t for t in TOPICS if t != topic)})")
    return parse(env.get("RASA_PATCHES"))


def patch(owner: Any, name: str, value: Any) -> None:
    """setattr(owner, name, value), remembered so that uninstall() puts back what was there."""
    _originals.append((_installing[-1] if _installing else "", owner, name, owner.__dict__.get(name, _ABSENT)))
    setattr(owner, name, value)


def original(owner: Any, name: str) -> Any:
    """What `owner.name` was before the patches replaced it (for tests comparing with Rasa)."""
    for _, patched_owner, patched_name, value in _originals:
        if patched_owner is owner and patched_name == name:
            return getattr(owner, name) if value is _ABSENT else value
    return getattr(owner, name)


def install(selection: tuple[str, ...] | list[str] = TOPICS) -> tuple[str, ...]:
    """Installs the selected topics not installed yet; returns what is installed. Nothing on a
    Rasa other than RASA_VERSION (a warning says so)."""
    import rasa

    unknown = [name for name in selection if name not in TOPICS]
    if unknown:
        raise SelectionError(f"unknown patch {', '.join(unknown)}; valid: {', '.join(TOPICS)}")
    if selection and rasa.__version__ != RASA_VERSION:
        logger.warning("Speed patches written for Rasa %s, found %s: not applied.", RASA_VERSION, rasa.__version__)
        return tuple(_installed)
    for topic in TOPICS:
        if topic in selection and topic not in _installed:
            _installing.append(topic)
            try:
                importlib.import_module(f"{__name__}.{topic}").install()
            finally:
                _installing.pop()
            _installed.append(topic)
    return tuple(_installed)


def uninstall() -> None:
    """Puts back everything install() replaced, last first."""
    while _originals:
        _, owner, name, value = _originals.pop()
        if value is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, value)
    _installed.clear()


def installed() -> tuple[str, ...]:
    return tuple(_installed)


def describe(selection: tuple[str, ...]) -> str:
    """The one line logged at start."""
    return f"speed patches: {', '.join(selection) if selection else 'none'}"
