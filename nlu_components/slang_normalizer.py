"""Slang normaliser: shorthand, typos and English words become one standard word before featurisation.

"gmn cara dwnload sertif", "gimana caranya download sertifikat" and "bagaimana cara unduh
sertifikat" should look alike to the classifier. With about 800 training examples the
classifier cannot learn every spelling; this component maps each word to its standard form
(nlu_components/slang_lexicon.yml), plus three regular patterns of chat Indonesian:
reduplication written with a 2 ("masuk2"), stretched endings ("iyaa", "makasihh") and the
suffixes/prefixes -nya, -ku, -mu, di-, nge- around a known word ("kodenya", "dikirim").

It only sets each token's lemma, which the CountVectorsFeaturizers read. Token text and offsets
stay as typed, so the LexicalSyntacticFeaturizer, the entity extractors and the actions (which
read the whole text) see exactly what the citizen wrote. The lexicon is copied into the model
when it is trained, so a model does not depend on the file that trained it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

DEFAULT_LEXICON = "nlu_components/slang_lexicon.yml"
# Affixes are taken off only when what remains is a word of the lexicon: "kodenya" -> "kode",
# but "bertanya" stays, since "berta" is no word we know.
_SUFFIXES = ("nya", "ku", "mu")
_PREFIXES = ("di", "nge")
_REDUPLICATION = re.compile(r"^([a-z]{3,})2$")  # "masuk2"; "ke2" (dose 2) is too short to match
_STRETCHED = re.compile(r"([a-z])\1{2,}")  # "bangeeet": three or more of a letter are one
_STRETCHED_END = re.compile(r"([aiueoh])\1+$")  # "iyaa", "makasihh"; "maaf" keeps its aa


def read_lexicon(path: str | Path) -> Dict[str, str]:
    """The YAML file `standard: [variants]` as a map from every known word to its standard form."""
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    mapping: Dict[str, str] = {}
    for standard, variants in entries.items():
        standard = str(standard).lower()
        for word in [standard, *[str(v).lower() for v in variants or []]]:
            if word in mapping and mapping[word] != standard:
                raise ValueError(f"{path}: '{word}' is listed under '{mapping[word]}' and '{standard}'")
            mapping[word] = standard
    return mapping


def normalise_word(word: str, lexicon: Dict[str, str]) -> Optional[str]:
    """The standard form of one word, or None when it has none (the word is left as typed)."""
    lowered = word.lower()
    candidate = _STRETCHED.sub(r"\1", lowered)
    match = _REDUPLICATION.match(candidate)
    if match:
        candidate = match.group(1)
    forms = (candidate, _STRETCHED_END.sub(r"\1", candidate))
    for form in forms:
        if form in lexicon:
            return lexicon[form]
        for suffix in _SUFFIXES:
            if form.endswith(suffix) and form[: -len(suffix)] in lexicon:
                return lexicon[form[: -len(suffix)]]
        for prefix in _PREFIXES:
            if form.startswith(prefix) and form[len(prefix):] in lexicon:
                return lexicon[form[len(prefix):]]
    return forms[1] if forms[1] != lowered else None


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER], is_trainable=True)
class SlangNormalizer(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"lexicon": DEFAULT_LEXICON}

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        # Rasa caches trained components by their config; editing the lexicon must retrain.
        path = Path(config.get("lexicon") or DEFAULT_LEXICON)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    def __init__(self, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
                 lexicon: Optional[Dict[str, str]] = None):
        self._config = config
        self._model_storage = model_storage
        self._resource = resource
        self.lexicon = lexicon or {}

    @classmethod
    def create(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "SlangNormalizer":
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        self.lexicon = read_lexicon(self._config.get("lexicon") or DEFAULT_LEXICON)
        with self._model_storage.write_to(self._resource) as directory:
            (directory / "lexicon.json").write_text(json.dumps(self.lexicon, ensure_ascii=False),
                                                    encoding="utf-8")
        return self._resource

    @classmethod
    def load(cls, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "SlangNormalizer":
        with model_storage.read_from(resource) as directory:
            lexicon = json.loads((directory / "lexicon.json").read_text(encoding="utf-8"))
        return cls(config, model_storage, resource, lexicon)

    def _normalise(self, message: Message) -> None:
        for token in message.get(TOKENS_NAMES[TEXT]) or []:
            standard = normalise_word(token.text, self.lexicon)
            if standard is not None:
                token.lemma = standard

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        for example in training_data.training_examples:
            self._normalise(example)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._normalise(message)
        return messages
