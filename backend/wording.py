"""The words the backend says (ticket labels, officers' messages to citizens) are handed in:
the backend reads no Rasa file. The assembling code reads domain.yml's responses
(actions/wording.py) and gives them as a Wording."""

from __future__ import annotations

import string
from typing import Any, Mapping, Protocol


class Wording(Protocol):
    def text(self, name: str, /, **values: Any) -> str:
        """The response `name`'s text with its {variables} filled in; KeyError if there is none."""


class _KeepMissing(dict):
    """A {variable} nobody filled stays visible as written, as Rasa's own responses do."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template_text: str, /, **values: Any) -> str:
    """Values are put in as written: an officer's "{x}" stays "{x}", never read as a variable."""
    return string.Formatter().vformat(template_text, (), _KeepMissing(values))


class Responses:
    """A Wording over responses given as data: name -> variations ({"text", "buttons"}), the
    shape of domain.yml's `responses:` section."""

    def __init__(self, responses: Mapping[str, list[Mapping[str, Any]]]):
        self._responses = responses

    def template(self, name: str) -> str:
        """The first variation's text, {variables} unfilled."""
        return self._responses[name][0]["text"]

    def text(self, name: str, /, **values: Any) -> str:
        return fill(self.template(name), **values)

    def buttons(self, name: str) -> list[dict[str, str]]:
        """The response's buttons (titles and payloads), in the given order."""
        return [dict(b) for b in self._responses[name][0].get("buttons") or []]
