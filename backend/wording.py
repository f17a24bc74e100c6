"""The words citizens read, taken from domain.yml's responses: for what is said outside a Rasa
turn (the officers' notifications, ticket labels) and for the pieces an action fills into a
response (a booster note inside the status). Designers edit them in domain.yml only."""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DOMAIN_FILE = Path(__file__).resolve().parents[1] / "domain.yml"


class _KeepMissing(dict):
    """A {variable} nobody filled stays visible as written, as Rasa's own responses do."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@lru_cache(maxsize=None)
def responses(path: str | None = None) -> dict[str, list[dict[str, Any]]]:
    source = Path(path or DOMAIN_FILE)
    return (yaml.safe_load(source.read_text(encoding="utf-8")) or {}).get("responses") or {}


def template(name: str) -> str:
    """The first variation's text of the response `name`, {variables} unfilled. A missing
    response is a KeyError at import of the module that needs it: at start, not mid-conversation."""
    return responses()[name][0]["text"]


def fill(template_text: str, /, **values: Any) -> str:
    return string.Formatter().vformat(template_text, (), _KeepMissing(values))


def text(name: str, **values: Any) -> str:
    """The response `name`'s text with its {variables} filled in."""
    return fill(template(name), **values)


def buttons(name: str) -> list[dict[str, str]]:
    """The buttons of the response `name` (titles and payloads), in the domain's order."""
    return [dict(b) for b in responses()[name][0].get("buttons") or []]
