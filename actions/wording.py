"""The words citizens read, taken from domain.yml's responses: for the pieces an action fills
into a response (a booster note inside the status), and handed to the backend (ticket labels,
the officers' messages) as a backend.wording.Wording. Designers edit them in domain.yml only."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from backend.wording import Responses, fill

DOMAIN_FILE = Path(__file__).resolve().parents[1] / "domain.yml"

__all__ = ["DOMAIN_FILE", "buttons", "domain", "fill", "responses", "template", "text"]


@lru_cache(maxsize=None)
def responses(path: str | None = None) -> dict[str, list[dict[str, Any]]]:
    source = Path(path or DOMAIN_FILE)
    return (yaml.safe_load(source.read_text(encoding="utf-8")) or {}).get("responses") or {}


def domain() -> Responses:
    """domain.yml's responses as a Wording, for the backend."""
    return Responses(responses())


def template(name: str) -> str:
    """The first variation's text of the response `name`, {variables} unfilled. A missing
    response is a KeyError at import of the module that needs it: at start, not mid-conversation."""
    return domain().template(name)


def text(name: str, **values: Any) -> str:
    """The response `name`'s text with its {variables} filled in."""
    return domain().text(name, **values)


def buttons(name: str) -> list[dict[str, str]]:
    """The buttons of the response `name` (titles and payloads), in the domain's order."""
    return domain().buttons(name)
