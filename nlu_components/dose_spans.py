"""DIET's `dose` entities brought to the labelling rule (docs/nlu.md): "dosis X" is one span.

DIET tags a token at a time and now and then stops short ("dosis [kedua]", "[second] dose") or
takes a count for a dose ("tercatat [2] dosis", "[3] bulan", "[24] jam", "berapa [dosis]").
This processor runs after DIET and before the EntitySynonymMapper: it widens a dose to the
"dosis"/"dose" next to it, so the synonyms map the whole span ("dosis kedua" -> 2), and drops
a dose that is only the word "dosis", a number followed by a unit of count or time, or a date or
hour ("tgl 12/3", "24/7", "jam 10.30"), which DIET sometimes takes for one.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message

NAME = "DoseSpans"
_BEFORE = re.compile(r"(?:dosis|dose)\s+(?:ke[\s-]?)?$", re.IGNORECASE)  # "dosis ", "dosis ke-"
_AFTER = re.compile(r"^\s+(?:dosis|dose)\b", re.IGNORECASE)  # "second dose"
_ONLY_THE_WORD = re.compile(r"^(?:dosis|doses?)$", re.IGNORECASE)
_COUNT = re.compile(r"^\s+(?:dosis|doses|kali|x|bulan|bln|minggu|hari|jam|tahun|thn|months?|weeks?|days?|hours?|"
                    r"times|years?)\b", re.IGNORECASE)
_DATE_OR_HOUR = re.compile(r"\d\s*[/.:-]\s*\d")  # "12/3", "24/7", "10.30", "12-03"; not "ke-2"


def fix_doses(text: str, entities: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    fixed = []
    for entity in entities:
        if entity.get("entity") != "dose":
            fixed.append(entity)
            continue
        start, end = entity["start"], entity["end"]
        value = text[start:end]
        if (_ONLY_THE_WORD.match(value) or (value.isdigit() and _COUNT.match(text[end:]))
                or _DATE_OR_HOUR.search(value)):
            continue
        before = _BEFORE.search(text[:start])
        after = _AFTER.match(text[end:])
        if before or after:
            start = before.start() if before else start
            end = end + after.end() if after else end
            entity = {**entity, "start": start, "end": end, "value": text[start:end],
                      "processors": [*entity.get("processors", []), NAME]}
        fixed.append(entity)
    return fixed


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class DoseSpans(GraphComponent):
    @classmethod
    def create(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "DoseSpans":
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            entities = message.get(ENTITIES)
            if entities:
                message.set(ENTITIES, fix_doses(message.get(TEXT) or "", entities), add_to_output=True)
        return messages
