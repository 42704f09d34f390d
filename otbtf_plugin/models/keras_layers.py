"""Keras, imported the plugin's way, and the layers of ours that saved models hold.

Training builds models with them; loading a model folder's ``model.keras`` (fine-tuning,
the ONNX export) needs them registered first, so that Keras' safe mode accepts them.
"""

from __future__ import annotations

from typing import Any

from . import runtimes


def keras_module():
    """Keras, after TensorFlow was imported the plugin's way (its own wheels, dlopen flags)."""
    runtimes.import_tensorflow()
    import keras

    return keras


def class_code_layer(keras: Any):
    """The ``ClassCode`` layer (registered, so that safe mode can load saved models)."""

    @keras.saving.register_keras_serializable(package="otbtf")
    class ClassCode(keras.layers.Layer):
        """argmax of the probabilities, mapped to the class codes of the labels."""

        def __init__(self, codes, **kwargs):
            super().__init__(**kwargs)
            self.codes = [int(c) for c in codes]

        def call(self, probabilities):
            table = keras.ops.convert_to_tensor(self.codes, dtype="int32")
            return keras.ops.take(table, keras.ops.argmax(probabilities, axis=-1))

        def get_config(self):
            return {**super().get_config(), "codes": self.codes}

    return ClassCode
