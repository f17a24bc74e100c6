"""The FAQ answer is chosen only for messages that ask a FAQ.

Rasa's ResponseSelector runs its neural network on every message, although its answer is used
only when the intent is its retrieval intent (`faq`). Most messages are not FAQs ("halo", a
phone number, a code, "download sertifikat"), and this network was a tenth of the CPU time of
a turn (docs/performance.md). This is the same component, trained the same way, that skips
messages the intent classifier did not classify as `faq`. Put it after the DIETClassifier.
"""

from __future__ import annotations

from typing import List

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.selectors.response_selector import ResponseSelector
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY
from rasa.shared.nlu.training_data.message import Message


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class FaqResponseSelector(ResponseSelector):
    def process(self, messages: List[Message]) -> List[Message]:
        asked = [m for m in messages if (m.get(INTENT) or {}).get(INTENT_NAME_KEY) in self._answers_for()]
        if asked:
            super().process(asked)
        return messages

    def _answers_for(self) -> list:
        # retrieval_intent unset: the selector answers every retrieval intent of the data.
        return [self.retrieval_intent] if self.retrieval_intent else self.all_retrieval_intents
