"""Keras 3 models saved as `.keras` or legacy `.h5`, run as one compiled TensorFlow graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, as_one_column, columns_for
from shared.manifest import ModelSpec


class KerasModel(BatchModel):
    """A loaded Keras model behind a `tf.function` with a `[None, width]` signature."""

    def __init__(self, spec: ModelSpec, columns: list[str], model: Any) -> None:
        super().__init__(spec, columns)
        import tensorflow as tf  # Keras' backend here; already imported by keras

        # One graph for every batch size: predict() builds a tf.data pipeline per
        # call, and predict_on_batch() traces again for the last, shorter batch.
        self._call = tf.function(
            lambda batch: model(batch, training=False),
            input_signature=[tf.TensorSpec([None, len(columns)], tf.float32)],
            autograph=False,
        )

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        output = self._call(features)
        return as_one_column(self.spec, output.numpy(), features.shape[0])


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> KerasModel:
    """Load a `.keras` or `.h5` file; the manifest must list its features (Keras records none)."""
    import keras  # heavy: imports TensorFlow

    # Inference needs no optimizer or loss, and Keras 3 cannot rebuild the training
    # config of some legacy .h5 files (a saved 'mse' loss fails to deserialize).
    model = keras.saving.load_model(path, compile=False)
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' has {len(inputs)} inputs; expected one"
        )
    columns = columns_for(spec, features, None, inputs[0].shape[-1])
    return KerasModel(spec, columns, model)
