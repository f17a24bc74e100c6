"""domain.yml's responses in the Rasa process, for what the channels say without a Rasa turn
(the REST channel's apology, the acknowledgement of the gate): read once at start, handed on as
a backend.wording.Wording. (whatsapp/texts.py reads its own the same way.)"""

from __future__ import annotations

from pathlib import Path

import yaml

from backend.wording import Responses

DOMAIN_FILE = Path(__file__).resolve().parents[1] / "domain.yml"

WORDING = Responses(yaml.safe_load(DOMAIN_FILE.read_text(encoding="utf-8"))["responses"])
