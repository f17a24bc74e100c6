"""Per-message work that stock Rasa 3.6 repeats and need not, done once instead.

Found by profiling `make bench` with py-spy (docs/performance.md); each replacement keeps the
behaviour of what it replaces, and tests/test_speedups.py checks that on Rasa's own inputs. They
are patches because Rasa has no setting for them: revisit on every Rasa upgrade (install()
refuses a Rasa other than the one they were written for).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
from collections import OrderedDict
from typing import Any, Optional

logger = logging.getLogger(__name__)

RASA_VERSION = "3.6.21"
_installed = False


def install() -> None:
    global _installed
    import rasa

    if _installed:
        return
    if rasa.__version__ != RASA_VERSION:
        logger.warning("Speed-ups written for Rasa %s, found %s: not applied.", RASA_VERSION, rasa.__version__)
        return
    _validate_action_result_once()
    _event_types_by_name()
    _build_models_eagerly()
    size = int(os.environ.get("NLU_CACHE_SIZE", "4096"))
    if size > 0:
        _cache_parses(size)
    _installed = True


def _validate_action_result_once() -> None:
    """Every custom action's reply is checked against a JSON schema. Rasa calls
    `jsonschema.validate(result, schema)`, which first validates the *schema* against the
    metaschema, every time: a third of a message's CPU time in our profile. Build the validator
    once; each reply is still validated in full, with the same errors."""
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction

    spec = RemoteAction.action_response_format_spec()
    cls = validator_for(spec)
    cls.check_schema(spec)
    validator = cls(spec)
    original = RemoteAction._validate_action_result

    @functools.wraps(original)
    def validate(self: RemoteAction, result: dict[str, Any]) -> bool:
        try:
            validator.validate(result)
            return True
        except ValidationError:
            return original(self, result)  # Rasa's own path, for its error message

    RemoteAction._validate_action_result = validate


def _event_types_by_name() -> None:
    """Reading a conversation from the tracker store turns each stored event into an object;
    for each one Rasa walks the whole Event class tree to find the class of that name. Keep the
    name -> class map; look again (Rasa's way) only for a name the map does not have."""
    from rasa.shared.core import events
    from rasa.shared.utils.common import all_subclasses

    original = events.Event.resolve_by_type
    cache: dict[str, type] = {}

    def resolve_by_type(type_name: str, default: Optional[type] = None) -> Optional[type]:
        cls = cache.get(type_name)
        if cls is None:
            for candidate in all_subclasses(events.Event):
                cache.setdefault(candidate.type_name, candidate)
            cls = cache.get(type_name)
        if cls is not None:
            return cls
        return original(type_name, default)

    events.Event.resolve_by_type = staticmethod(resolve_by_type)


# Only texts that carry no personal data are kept: no digits (NIK, phone number, code, ticket
# reference), no "@" (e-mail), short. What remains repeats a lot: "halo", "ya", "menu", "batal",
# "cek status vaksin".
_CACHEABLE = re.compile(r"[^\d@]{1,80}")


def _cache_parses(size: int) -> None:
    """Citizens type the same short messages over and over ("halo", "ya", "batal", "cek
    status"). The NLU result depends on the model and the text alone, so keep the last `size` results
    (NLU_CACHE_SIZE, 0 turns this off) for texts without personal data and reuse a copy."""
    from rasa.core.processor import MessageProcessor

    original = MessageProcessor._parse_message_with_graph
    cache: OrderedDict[tuple[str, str, bool], dict[str, Any]] = OrderedDict()

    @functools.wraps(original)
    def parse(self: MessageProcessor, message: Any, tracker: Any, only_output_properties: bool = True) -> dict[str, Any]:
        text = message.text
        if not isinstance(text, str) or not _CACHEABLE.fullmatch(text):
            return original(self, message, tracker, only_output_properties)
        key = (self.model_filename, text, only_output_properties)
        found = cache.get(key)
        if found is None:
            found = original(self, message, tracker, only_output_properties)
            cache[key] = copy.deepcopy(found)
            if len(cache) > size:
                cache.popitem(last=False)
            return found
        cache.move_to_end(key)
        return copy.deepcopy(found)

    MessageProcessor._parse_message_with_graph = parse


def _build_models_eagerly() -> None:
    """Loading DIET or the ResponseSelector trains them for one step on one example, only to
    create their weights before the trained ones are read in; Rasa compiles that step into a
    TensorFlow graph first, which is most of the 30 s a start takes. Run that one step eagerly
    instead (same weights created, then overwritten as before); prediction is compiled exactly
    as Rasa does it (unless the component's config asks for eager mode, as before)."""
    import tensorflow as tf
    from rasa.utils.tensorflow.constants import LEARNING_RATE, RUN_EAGERLY
    from rasa.utils.tensorflow.data_generator import RasaBatchDataGenerator
    from rasa.utils.tensorflow.models import RasaModel

    def load(cls, model_file_name, model_data_example, predict_data_example=None,
             finetune_mode=False, *args, **kwargs):
        # Rasa's RasaModel.load, but for run_eagerly during the building step.
        model = cls(*args, **kwargs)
        config = kwargs.get("config", {})
        model.compile(optimizer=tf.keras.optimizers.Adam(config.get(LEARNING_RATE, 0.001)), run_eagerly=True)
        model.fit(RasaBatchDataGenerator(model_data_example, batch_size=1), verbose=False)
        model.load_weights(model_file_name)
        model.run_eagerly = config.get(RUN_EAGERLY)
        if not finetune_mode and predict_data_example:
            model.run_inference(predict_data_example)
        return model

    RasaModel.load = classmethod(load)
