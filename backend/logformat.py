"""Log lines as text or as JSON (LOG_FORMAT=text|json), for both processes (logging.yml).

In json, each record is one line: {"time", "level", "logger", "message", "request_id"} and
"exception" when there is one. The message is the record after backend.logmask's filter,
which runs on the handler before any formatter: JSON output is masked like text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

from .events import REQUEST_ID
from .logmask import MaskingFilter

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s - %(message)s"


class RequestIdFilter(logging.Filter):
    """Puts the current turn's id on the record (empty outside a turn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


# Our own few lines rather than python-json-logger: five fixed fields, and the one thing that
# matters here (only the masked message and exception text, never a record's extra attributes,
# which are unmasked) is easier to see in these lines than to configure in a library.
class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def log_format(env=os.environ) -> str:
    value = (env.get("LOG_FORMAT") or "text").strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {value!r}")
    return value


def make_formatter() -> logging.Formatter:
    """The formatter LOG_FORMAT names (logging.yml's `()` factory)."""
    return JsonFormatter() if log_format() == "json" else logging.Formatter(TEXT_FORMAT)


def json_line(level: str, logger: str, message: str) -> str:
    """One line in the JSON format, for what is written before logging is configured."""
    return json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level,
                       "logger": logger, "message": message, "request_id": ""}, ensure_ascii=False)


def capture_early() -> None:
    """In json: JSON on stderr from the process's first lines, before logging.yml is applied
    (which then replaces this handler), and Python's warnings (libraries warn on import) through
    logging rather than written to stderr as text."""
    try:
        if log_format() != "json":
            return
    except ValueError:
        return  # the process's main() refuses it with a message
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(MaskingFilter())
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
