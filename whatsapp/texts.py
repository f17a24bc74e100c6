"""What the channel itself says to citizens, when Rasa cannot or need not answer: domain.yml's
responses (utter_channel_*), read once at start so designers edit them with the rest.

The apology is sent precisely when Rasa or the action server failed, and the others answer
before a message reaches Rasa at all, so no Rasa turn can send them.
"""

from pathlib import Path

import yaml

from .inbound import MAX_TEXT_CHARS

DOMAIN_FILE = Path(__file__).resolve().parents[1] / "domain.yml"
_RESPONSES = yaml.safe_load(DOMAIN_FILE.read_text(encoding="utf-8"))["responses"]


def _text(name: str) -> str:
    return _RESPONSES[name][0]["text"]


# The same response as the REST channel's apology, so every channel says it alike.
APOLOGY = _text("utter_channel_unavailable")
UNSUPPORTED = _text("utter_channel_unsupported")
TOO_LONG = _text("utter_channel_too_long").replace("{max_chars}", str(MAX_TEXT_CHARS))
CHOOSE_ONE = _text("utter_channel_choose_one")
LIST_BUTTON = _text("utter_channel_list_button")
TYPE_YOUR_CHOICE = _text("utter_channel_type_your_choice")
CERTIFICATE_CAPTION = _text("utter_channel_certificate_caption")
