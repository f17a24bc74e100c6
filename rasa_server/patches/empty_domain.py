"""`Domain.is_empty()` against an empty domain built once.

Replaces `Domain.is_empty`.
Why: every parse is checked against the domain unless the domain is empty, and
`Domain.is_empty()` built a whole empty Domain to compare with, every time. The empty domain's
dict is built once; the comparison is Rasa's (`as_dict()` equality).
Rasa internals touched: `Domain.is_empty`, `Domain.empty()`, `Domain.as_dict()`.
"""

from __future__ import annotations

from rasa_server.patches import patch


def install() -> None:
    from rasa.shared.core.domain import Domain

    empty = Domain.empty().as_dict()

    def is_empty(self: Domain) -> bool:
        return self.as_dict() == empty

    patch(Domain, "is_empty", is_empty)
