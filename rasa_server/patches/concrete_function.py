"""DIET and the ResponseSelector called through their concrete TensorFlow function.

Wraps `RasaModel._rasa_predict` (private).
Why: both predict through a tf.function with a fixed input signature, so it has one compiled
(concrete) function, but calling the tf.function looks that function up again on every call
from the inputs' structure, types and shapes; for a short message that lookup cost more than
running the network. Once Rasa has made the function, the concrete one is called directly, as
the tf.function does after its lookup: inputs converted the same way (each to its spec's
dtype) and checked against the same signature; anything else (eager mode, inputs that do not
fit, a new predict step) goes Rasa's way, for Rasa's own result or error.
Rasa internals touched: `RasaModel._rasa_predict`, `_tf_predict_step`, `_run_eagerly`,
`_training`, `_empty_lists_to_none_in_dict` (all private), `rasa.utils.tensorflow.models.tf_utils`;
TensorFlow's `ConcreteFunction._call_flat` (private) and `captured_inputs`.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from rasa_server.patches import patch


def install() -> None:
    import tensorflow as tf
    from rasa.shared.constants import DIAGNOSTIC_DATA
    from rasa.utils.tensorflow import models

    original = models.RasaModel._rasa_predict
    kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (step, function, specs)

    @functools.wraps(original)
    def _rasa_predict(self: models.RasaModel, batch_in: Any) -> dict[str, Any]:
        found = kept.get(self)
        if found is None or self._run_eagerly or found[0] is not self._tf_predict_step:
            outputs = original(self, batch_in)
            if not self._run_eagerly and self._tf_predict_step is not None:
                step = self._tf_predict_step
                kept[self] = (step, step.get_concrete_function(),
                              tuple(tf.nest.flatten(step.input_signature)))
            return outputs
        _, function, specs = found
        if not isinstance(batch_in, (tuple, list)) or len(batch_in) != len(specs):
            return original(self, batch_in)
        tensors = []
        for value, spec in zip(batch_in, specs):
            tensor = tf.convert_to_tensor(value, dtype_hint=spec.dtype)
            if not spec.is_compatible_with(tensor):
                return original(self, batch_in)
            tensors.append(tensor)
        self._training = False
        outputs = models.tf_utils.sync_to_numpy_or_python_type(function._call_flat(tensors, function.captured_inputs))
        if DIAGNOSTIC_DATA in outputs:
            outputs[DIAGNOSTIC_DATA] = self._empty_lists_to_none_in_dict(outputs[DIAGNOSTIC_DATA])
        return outputs

    patch(models.RasaModel, "_rasa_predict", _rasa_predict)
