"""DIET's and the ResponseSelector's weights created eagerly at load.

Replaces `RasaModel.load` (classmethod of rasa.utils.tensorflow.models.RasaModel).
Why: loading DIET or the ResponseSelector trains them for one step on one example, only to
create their weights before the trained ones are read in; Rasa compiles that step into a
TensorFlow graph first, which is most of the time a start takes. That one step runs eagerly
instead (the same weights created, then overwritten from the file as before); prediction is
compiled exactly as Rasa does it (unless the component's config asks for eager mode, as before).
Rasa internals touched: `RasaModel.load` (re-implemented: Rasa's body with `run_eagerly=True`
for the fit), `RasaBatchDataGenerator`, `RasaModel.run_inference`, the config keys
`LEARNING_RATE` and `RUN_EAGERLY`.
"""

from __future__ import annotations

from rasa_server.patches import patch


def install() -> None:
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

    patch(RasaModel, "load", classmethod(load))
