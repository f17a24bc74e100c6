"""What the backend (and the code it is handed) reports for monitoring, without knowing how.

The backend imports no metrics library: it calls `events()` at the few places an operator
needs to count (OTP deliveries and refusals, waits for a database connection, Graph API
errors of the WhatsApp OTP sender). Each process plugs in its implementation at start
(actions/metrics.py, rasa_server/metrics.py) with `install()`; until then nothing is recorded.
"""

from __future__ import annotations

import contextvars
import re
from typing import Protocol

# The id of the citizen's turn this code runs for, made by the channel when the turn starts
# and carried into the action server in the message's metadata; log lines carry it
# (backend/logformat.py). Empty outside a turn (delivery worker, start-up).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_REQUEST_ID_SHAPE = re.compile(r"^[0-9a-f]{16,32}$")


def valid_request_id(value: object) -> str:
    """value if it looks like an id we make (it comes back from outside), else ""."""
    return value if isinstance(value, str) and _REQUEST_ID_SHAPE.match(value) else ""


class Events(Protocol):
    def otp_delivery(self, outcome: str) -> None:
        """A queued code: "sent", "failed" (tried again later), "expired" (given up), "dropped"."""

    def otp_refused(self, limit: str) -> None:
        """A code not issued: "per_hour", "resend_wait" or "global_per_minute"."""

    def pool_wait(self, pool: str, seconds: float) -> None:
        """Time a caller waited for a free connection of a pool (0 when one was free)."""

    def graph_error(self, code: str) -> None:
        """The Graph API refused a call or never answered: Meta's error code, or the HTTP status."""


class NoEvents:
    """The default: nothing recorded (tests, tools, jobs)."""

    def otp_delivery(self, outcome: str) -> None:
        pass

    def otp_refused(self, limit: str) -> None:
        pass

    def pool_wait(self, pool: str, seconds: float) -> None:
        pass

    def graph_error(self, code: str) -> None:
        pass


_current: Events = NoEvents()


def install(implementation: Events) -> None:
    global _current
    _current = implementation


def events() -> Events:
    return _current
