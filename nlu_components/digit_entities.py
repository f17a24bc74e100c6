"""NIK, phone numbers and OTP codes found by their digit patterns, not guessed token by token.

DIET tags entities one whitespace token at a time, so a number typed in groups ("0812 3456
7890", "+62 821-9876-5432", "739 201") came out cut short or split in two, and a six-digit
ticket number as an OTP code. These three have a fixed shape: the patterns of
data/nlu/lookups.yml (`regex: nik`, `phone_number`, `otp_code`, which also feed DIET as
features) find them whole. This component runs after DIET and is the only source of the three:
DIET's own guesses of them are dropped, and so is any DIET entity inside a number found here.

Rasa's RegexEntityExtractor would find the same spans, but next to DIET's guesses (every number
twice), and it cannot tell a code from a ticket number by the word before it. Precedence: a NIK
first, then a phone number, then a code, never overlapping, so a NIK is never read as a phone.
A six-digit number after a ticket word ("tiket", "laporan", "aduan") is not a code, one after
"kode" or "otp" is; with neither, a number DIET tagged `ticket_id` stays DIET's. Values stay as typed: the forms read the text themselves (actions/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Pattern, Tuple

import yaml
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, EXTRACTOR, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

# In order of precedence.
ENTITIES_FOUND = ("nik", "phone_number", "otp_code")
# The nearest of these words before a six-digit number says what it is; other words
# ("saya", "nomor", "yg") are looked past, at most three of them.
CODE_WORDS = {"kode", "kd", "otp", "code", "verifikasi", "token", "pin"}
NOT_CODE_WORDS = {"tiket", "ticket", "laporan", "lapor", "aduan", "pengaduan", "komplain", "complaint",
                  "report", "referensi", "ref", "rp", "harga", "biaya", "lahir", "tanggal", "tgl", "jam"}
_WORD = re.compile(r"[a-z]+")
_SUFFIX = re.compile(r"(?:nya|na|ne|ku|mu)$")
NAME = "DigitEntityExtractor"


def load_patterns(lookups: Path) -> Dict[str, str]:
    """The digit patterns of a YAML training file (for tools and tests; training reads them from the data)."""
    blocks = (yaml.safe_load(Path(lookups).read_text(encoding="utf-8")) or {}).get("nlu") or []
    return {block["regex"]: line.strip()[1:].strip()
            for block in blocks if block.get("regex") in ENTITIES_FOUND
            for line in block["examples"].splitlines() if line.strip().startswith("-")}


def _is_code(text: str, start: int) -> Optional[bool]:
    """What the nearest telling word before a six-digit number says it is (None: no such word)."""
    words = _WORD.findall(text[max(0, start - 40):start].lower())[-3:]
    for word in reversed(words):
        for form in (word, _SUFFIX.sub("", word)):
            if form in CODE_WORDS:
                return True
            if form in NOT_CODE_WORDS:
                return False
    return None


def extract_digits(text: str, patterns: Dict[str, str],
                   not_codes: Iterable[Tuple[int, int]] = ()) -> List[Dict[str, Any]]:
    """The NIKs, phone numbers and codes in `text`, without overlaps; `not_codes` are spans
    another extractor knows to be something else (a ticket reference)."""
    compiled: Dict[str, Pattern] = {name: re.compile(patterns[name], re.IGNORECASE)
                                    for name in ENTITIES_FOUND if name in patterns}
    taken: List[Tuple[int, int]] = []
    found = []
    for name, pattern in compiled.items():
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if name == "otp_code":
                # The word before decides; without one, a number DIET took for a ticket stays one.
                said = _is_code(text, start)
                if said is False or (said is None and any(start < e and s < end for s, e in not_codes)):
                    continue
            taken.append((start, end))
            found.append({"entity": name, "start": start, "end": end, "value": match.group(0),
                          EXTRACTOR: NAME})
    return sorted(found, key=lambda entity: entity["start"])


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=True)
class DigitEntityExtractor(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {}

    def __init__(self, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
                 patterns: Optional[Dict[str, str]] = None):
        self._model_storage = model_storage
        self._resource = resource
        self.patterns = patterns or {}

    @classmethod
    def create(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "DigitEntityExtractor":
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        # The patterns travel inside the model, like the RegexFeaturizer's copy of them.
        self.patterns = {feature["name"]: feature["pattern"] for feature in training_data.regex_features
                         if feature["name"] in ENTITIES_FOUND}
        with self._model_storage.write_to(self._resource) as directory:
            (directory / "patterns.json").write_text(json.dumps(self.patterns), encoding="utf-8")
        return self._resource

    @classmethod
    def load(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "DigitEntityExtractor":
        with model_storage.read_from(resource) as directory:
            patterns = json.loads((directory / "patterns.json").read_text(encoding="utf-8"))
        return cls(config, model_storage, resource, patterns)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            others = message.get(ENTITIES) or []
            tickets = [(e["start"], e["end"]) for e in others if e.get("entity") == "ticket_id"]
            found = extract_digits(text, self.patterns, tickets)
            kept = [e for e in others if e.get("entity") not in ENTITIES_FOUND
                    and not any(e["start"] < f["end"] and f["start"] < e["end"] for f in found)]
            message.set(ENTITIES, sorted(kept + found, key=lambda entity: entity["start"]),
                        add_to_output=True)
        return messages
