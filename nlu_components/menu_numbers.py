"""Menu numbers as intents: "2", "menu 2", "pilih 2" mean the second menu item, with certainty.

A bare digit carries too little for a statistical classifier (it lands in the fallback), yet
the menu tells citizens to "ketik nomornya". The mapping is set in config.yml, next to the
menu it mirrors. Inside a form a digit is still taken as the answer (slot mappings use the
text), so "2" for a dose or a person is unaffected.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

_NUMBER = re.compile(r"^\s*(?:menu|pilih|pilihan|no\.?|nomor|nmr)?\s*(\d{1,2})\s*[.)]?\s*$", re.IGNORECASE)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class MenuNumberClassifier(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"menu": {}}

    @classmethod
    def create(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "MenuNumberClassifier":
        return cls(config)

    def __init__(self, config: Dict[str, Any]):
        self.menu = {str(number): intent for number, intent in (config.get("menu") or {}).items()}

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            match = _NUMBER.match(message.get(TEXT) or "")
            intent = self.menu.get(match.group(1)) if match else None
            if intent is None:
                continue
            chosen = {"name": intent, "confidence": 1.0}
            ranking = [r for r in message.get(INTENT_RANKING_KEY) or [] if r.get("name") != intent]
            message.set(INTENT, chosen, add_to_output=True)
            message.set(INTENT_RANKING_KEY, [chosen] + ranking, add_to_output=True)
        return messages
