"""Loading model files and predicting with them, one small class per format.

Every format is loaded behind the same two-step interface: `load_model(spec, path,
features)` and then `predict_batch(float32 array)`. Numerai's hosted-model
pickles are the exception: their `predict` expects the whole round as a DataFrame,
exactly as Numerai's own runner calls it, so they see every row at once.

Each framework is imported inside its loader, never at module level: the
Functions host imports `function_app` at every cold start, and TensorFlow alone
takes seconds and hundreds of megabytes to import.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from shared.errors import ModelLoadError, PredictionError
from shared.manifest import ModelFormat, ModelSpec

log = logging.getLogger(__name__)


class BatchModel(ABC):
    """A model that predicts one float32 batch of feature rows at a time."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abstractmethod
    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        """Predict for `features` (rows × the model's features); one value per row."""


class WholeRoundModel(ABC):
    """A model that must see every live row in one call (Numerai's upload contract)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abstractmethod
    def predict_round(
        self, features: pd.DataFrame, benchmark_models: pd.DataFrame | None
    ) -> pd.Series:
        """Predict for the round's `features` (index `id`); a Series indexed like them."""


LoadedModel = BatchModel | WholeRoundModel


def load_model(spec: ModelSpec, path: Path, features: list[str]) -> LoadedModel:
    """Load `path` as `spec.format` and check that it takes `features` as inputs.

    Raises ModelLoadError naming the model and the file for anything that goes
    wrong, including a file that is not of the declared format.
    """
    loader = _LOADERS[spec.format]
    if not path.is_file():
        raise ModelLoadError(f"model '{spec.name}': model file '{spec.file}' does not exist")
    try:
        return loader(spec, path, features)
    except ModelLoadError:
        raise
    except Exception as exc:  # a framework's own error, whatever its type
        raise ModelLoadError(
            f"model '{spec.name}': cannot load '{spec.file}' as {spec.format.value}: "
            f"{_first_line(exc)}"
        ) from exc


def as_one_column(spec: ModelSpec, output: Any, rows: int) -> np.ndarray:
    """Flatten a model's output to one value per row, or say why it cannot be."""
    values = np.asarray(output)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != rows:
        raise PredictionError(
            f"model '{spec.name}': returned an output of shape {values.shape} for {rows} rows; "
            "expected one value per row"
        )
    return values


class KerasModel(BatchModel):
    """A Keras 3 model saved as `.keras` or legacy `.h5`, run as one compiled TensorFlow graph."""

    def __init__(self, spec: ModelSpec, model: Any, width: int) -> None:
        super().__init__(spec)
        import tensorflow as tf  # Keras' backend here; already imported by keras

        # One graph for every batch size: predict() builds a tf.data pipeline per
        # call, and predict_on_batch() traces again for the last, shorter batch.
        # make bench prints the three side by side.
        self._call = tf.function(
            lambda batch: model(batch, training=False),
            input_signature=[tf.TensorSpec([None, width], tf.float32)],
            autograph=False,
        )

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        output = self._call(features)
        return as_one_column(self.spec, output.numpy(), features.shape[0])


def _load_keras(spec: ModelSpec, path: Path, features: list[str]) -> KerasModel:
    import keras  # heavy: imports TensorFlow

    # Inference needs no optimizer or loss, and Keras 3 cannot rebuild the training
    # config of some legacy .h5 files (a saved 'mse' loss fails to deserialize).
    model = keras.saving.load_model(path, compile=False)
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelLoadError(f"model '{spec.name}': '{spec.file}' has {len(inputs)} inputs; expected one")
    _check_width(spec, inputs[0].shape[-1], features)
    return KerasModel(spec, model, len(features))


class LightGBMModel(BatchModel):
    """A LightGBM booster saved with `Booster.save_model` (text format)."""

    def __init__(self, spec: ModelSpec, booster: Any) -> None:
        super().__init__(spec)
        self._booster = booster

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        return as_one_column(self.spec, self._booster.predict(features), features.shape[0])


def _load_lightgbm(spec: ModelSpec, path: Path, features: list[str]) -> LightGBMModel:
    if path.suffix.lower() == ".json":
        # dump_model() JSON is a description of the trees; LightGBM itself cannot load it.
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' is LightGBM JSON, which LightGBM cannot load; "
            "save the booster with booster.save_model('model.txt') instead"
        )
    import lightgbm

    booster = lightgbm.Booster(model_file=str(path))
    _check_width(spec, booster.num_feature(), features)
    _check_names(spec, booster.feature_name(), features)
    return LightGBMModel(spec, booster)


class OnnxModel(BatchModel):
    """An ONNX graph run by onnxruntime on the CPU."""

    def __init__(self, spec: ModelSpec, session: Any, input_name: str, dtype: type) -> None:
        super().__init__(spec)
        self._session = session
        self._input_name = input_name
        self._dtype = dtype

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        feed = {self._input_name: features.astype(self._dtype, copy=False)}
        output = self._session.run(None, feed)[0]
        return as_one_column(self.spec, output, features.shape[0])


def _load_onnx(spec: ModelSpec, path: Path, features: list[str]) -> OnnxModel:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"model '{spec.name}': '{spec.file}' has {len(inputs)} inputs; expected one")
    dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64}.get(inputs[0].type)
    if dtype is None:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' takes {inputs[0].type}; expected a float tensor"
        )
    _check_width(spec, inputs[0].shape[-1], features)
    return OnnxModel(spec, session, inputs[0].name, dtype)


class NumeraiPickleModel(WholeRoundModel):
    """A cloudpickled `predict(live_features, live_benchmark_models)` function.

    This is the file Numerai's hosted model uploads accept; it is called and its
    output checked the way Numerai's runner does.
    """

    def __init__(self, spec: ModelSpec, predict: Callable[..., Any]) -> None:
        super().__init__(spec)
        self._predict = predict
        self._wants_benchmarks = _positional_arity(predict) >= 2

    def predict_round(
        self, features: pd.DataFrame, benchmark_models: pd.DataFrame | None
    ) -> pd.Series:
        if self._wants_benchmarks:
            result = self._predict(features, benchmark_models)
        else:
            result = self._predict(features)
        return self._checked(result, features.index)

    def _checked(self, result: Any, ids: pd.Index) -> pd.Series:
        name = self.spec.name
        if not isinstance(result, pd.DataFrame):
            raise PredictionError(
                f"model '{name}': predict() returned {type(result).__name__}; expected a DataFrame"
            )
        if result.empty:
            raise PredictionError(f"model '{name}': predict() returned an empty DataFrame")
        if "prediction" not in result.columns:
            raise PredictionError(
                f"model '{name}': predict() returned columns {list(result.columns)[:5]}; "
                "expected a 'prediction' column"
            )
        predictions = result["prediction"]
        if predictions.isna().any():
            raise PredictionError(
                f"model '{name}': predict() returned NaN for {int(predictions.isna().sum())} rows"
            )
        missing = ids.difference(predictions.index)
        if len(missing):
            raise PredictionError(
                f"model '{name}': predict() returned no prediction for {len(missing)} of "
                f"{len(ids)} live ids (first: {', '.join(map(str, missing[:3]))})"
            )
        return predictions.loc[ids] if not predictions.index.equals(ids) else predictions


def _load_pickle(spec: ModelSpec, path: Path, features: list[str]) -> NumeraiPickleModel:
    if not spec.trust_pickle:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' is a pickle, and loading a pickle runs the code "
            "inside it. Add \"trust_pickle\": true to this manifest entry only if you made the "
            "file or trust whoever did."
        )
    import cloudpickle

    with path.open("rb") as handle:
        predict = cloudpickle.load(handle)
    if not callable(predict):
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' holds a {type(predict).__name__}; "
            "expected a predict(live_features, live_benchmark_models) function"
        )
    return NumeraiPickleModel(spec, predict)


def _positional_arity(function: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(1 for p in parameters if p.kind in kinds)


def _check_width(spec: ModelSpec, width: Any, features: list[str]) -> None:
    if width is not None and int(width) != len(features):
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' takes {width} features but its manifest entry "
            f"gives {len(features)}; check 'features'"
        )


def _check_names(spec: ModelSpec, trained_on: list[str], features: list[str]) -> None:
    """Compare the column names a model file records with the manifest's, when it records any."""
    if all(name == f"Column_{i}" for i, name in enumerate(trained_on)):
        return  # trained on a bare array: LightGBM's placeholder names say nothing
    for position, (trained, given) in enumerate(zip(trained_on, features, strict=True)):
        if trained != given:
            raise ModelLoadError(
                f"model '{spec.name}': '{spec.file}' was trained with '{trained}' as feature "
                f"#{position + 1}, but its manifest entry gives '{given}'; the order must match training"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


_LOADERS: dict[ModelFormat, Callable[[ModelSpec, Path, list[str]], LoadedModel]] = {
    ModelFormat.KERAS: _load_keras,
    ModelFormat.LIGHTGBM: _load_lightgbm,
    ModelFormat.ONNX: _load_onnx,
    ModelFormat.NUMERAI_PICKLE: _load_pickle,
}
