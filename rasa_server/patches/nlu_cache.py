"""NLU results cached for texts without personal data.

Wraps `MessageProcessor._parse_message_with_graph` (private).
Why: citizens type the same short messages over and over ("halo", "ya", "batal", "cek status",
"2"), and the parse depends on the model and the text alone. The last NLU_CACHE_SIZE results
(default 4096; 0 keeps nothing) are kept per process, keyed by model file, text and
`only_output_properties`, and each caller gets a deep copy. Only texts that carry no personal
data are kept (cacheable()): at most one digit (no NIK, phone number, code, date or ticket
reference; "2" and "dosis 3" are kept), no "@" (e-mail), at most 80 characters.
Rasa internals touched: `MessageProcessor._parse_message_with_graph`,
`MessageProcessor.model_filename`.
"""

from __future__ import annotations

import copy
import functools
import os
from collections import OrderedDict
from typing import Any

from rasa_server.jsonio import keep_last
from rasa_server.patches import patch


def cacheable(text: Any) -> bool:
    return (isinstance(text, str) and 0 < len(text) <= 80 and "@" not in text
            and sum(ch.isdigit() for ch in text) <= 1)


def install() -> None:
    size = int(os.environ.get("NLU_CACHE_SIZE", "4096"))
    if size > 0:
        cache_parses(size)


def cache_parses(size: int) -> None:
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

    patch(MessageProcessor, "_parse_message_with_graph", parse)
