"""A logging filter that masks personal data in every log line: NIK, phone numbers, OTP codes,
e-mail addresses and certificate download tokens.

Installed on the handlers of both processes (logging.yml for Rasa, actions/server.py for the
action server), so a careless log call, a library's log line or an exception text cannot
leak them. What the citizen is shown is masked separately (backend.identifiers).
"""

from __future__ import annotations

import logging
import re

from .staff_text import for_staff

# Digits, possibly in groups separated by one space or dash: "0812-3456-7001", "482 913".
_NUMBER = re.compile(r"(?<![\w+])\+?\d(?:[ \-]?\d){5,20}(?!\w)")
_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
_TOKEN = re.compile(r"(/certificates/)[A-Za-z0-9_\-]+")


def _mask_number(match: re.Match) -> str:
    raw = match.group(0)
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 16:  # a NIK
        return digits[:4] + "********" + digits[-4:]
    national = "0" + digits[2:] if digits.startswith("62") else digits
    if national.startswith("08") and 10 <= len(national) <= 13:  # a mobile number
        return national[:4] + "****" + national[-4:]
    if len(digits) == 6:  # an OTP code
        return "******"
    return raw


def mask_text(text: str) -> str:
    text = _TOKEN.sub(r"\1***", text)
    text = _NUMBER.sub(_mask_number, text)
    return _EMAIL.sub(r"\1***@\2", text)


class MaskingFilter(logging.Filter):
    """Masks personal data, then shows control characters visibly (an escape sequence in a
    citizen's text must not act on the terminal of whoever reads the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = for_staff(mask_text(message), keep_lines=True)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = for_staff(mask_text(text), keep_lines=True)
            record.exc_info = None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
