"""Objects with a scikit-learn-style `predict`, saved with `joblib.dump` or `pickle.dump`.

Scikit-learn estimators and Pipelines, and the scikit-learn APIs of LightGBM
(`LGBMRegressor`), XGBoost (`XGBRegressor`) and CatBoost (`CatBoostRegressor`):
numerai-cli's example saves its model this way. Loading runs code stored in the
file, so the manifest must trust it first.

With `"method": "predict_proba"` a classifier predicts the expected class value,
sum over classes of P(class) × class value, when its classes are numbers (for
classes 0 and 1 that is P(class 1)); otherwise P(its last class).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError, PredictionError
from shared.formats.base import (
    BatchModel,
    as_one_column,
    columns_for,
    require_trust,
    unpickle,
)
from shared.formats.lightgbm import recorded_names as lightgbm_names
from shared.manifest import ModelSpec, PredictMethod

log = logging.getLogger(__name__)


class SklearnModel(BatchModel):
    """An unpickled estimator, called with a DataFrame when it was fitted on one."""

    def __init__(
        self,
        spec: ModelSpec,
        columns: list[str],
        estimator: Any,
        as_frame: bool,
        class_values: np.ndarray | None,
    ) -> None:
        super().__init__(spec, columns)
        self._estimator = estimator
        self._as_frame = as_frame
        self._class_values = class_values  # weights of predict_proba's columns; None: predict

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        rows = features.shape[0]
        data: Any = features
        if self._as_frame:
            import pandas as pd

            # Fitted on a DataFrame: scikit-learn checks the names (and warns on a
            # bare array), and a Pipeline's column selectors find columns by name.
            data = pd.DataFrame(features, columns=self.columns, copy=False)
        if self._class_values is None:
            return as_one_column(self.spec, self._estimator.predict(data), rows)
        probabilities = np.asarray(self._estimator.predict_proba(data))
        if probabilities.ndim != 2 or probabilities.shape != (rows, len(self._class_values)):
            raise PredictionError(
                f"model '{self.spec.name}': predict_proba returned shape {probabilities.shape} for "
                f"{rows} rows; expected one column per class ({len(self._class_values)})"
            )
        return probabilities @ self._class_values


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> SklearnModel:
    """Unpickle the estimator, if trusted, and check its recorded feature names or width."""
    require_trust(spec)  # before anything reads the file: unpickling runs its code
    estimator = _unpickle(spec, path)
    _check_methods(spec, estimator)
    recorded = recorded_names(estimator)
    columns = columns_for(spec, features, recorded, _attribute(estimator, "n_features_in_"))
    as_frame = recorded is not None and _attribute(estimator, "feature_names_in_") is not None
    class_values = None
    if spec.method is PredictMethod.PREDICT_PROBA:
        class_values = expected_value_weights(spec, _attribute(estimator, "classes_"))
    return SklearnModel(spec, columns, estimator, as_frame, class_values)


def recorded_names(estimator: Any) -> list[str] | None:
    """The feature names an estimator was fitted with, or None when it records only placeholders.

    scikit-learn (and XGBoost's and LightGBM's sklearn APIs, when fitted on a
    DataFrame) keep `feature_names_in_`; LightGBM's sklearn API keeps
    `feature_name_` (`Column_<i>` when fitted on an array); CatBoost keeps
    `feature_names_` ("0", "1", … when fitted on an array).
    """
    names = _attribute(estimator, "feature_names_in_")
    if names is not None:
        # LightGBM 4.6's sklearn API sets it to its Column_<i> placeholders for an array.
        return lightgbm_names([str(name) for name in names])
    names = _attribute(estimator, "feature_name_")
    if names is not None:
        return lightgbm_names(list(names))
    names = _attribute(estimator, "feature_names_")
    if names is not None and not all(str(name) == str(i) for i, name in enumerate(names)):
        return [str(name) for name in names]
    return None


def expected_value_weights(spec: ModelSpec, classes: Any) -> np.ndarray:
    """Weights that turn predict_proba's columns into one value per row.

    Numeric classes: the class values, so the result is the expected class value.
    Other classes: 1 for the last class and 0 elsewhere, so it is P(last class).
    """
    if classes is None:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' has no classes_, so its predict_proba columns "
            'cannot be matched to class values; use "method": "predict"'
        )
    values = np.asarray(classes)
    if values.ndim != 1 or len(values) < 2:
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' has classes_ {values.tolist()!r}; predict_proba "
            "needs a classifier of one target with two classes or more"
        )
    if _numeric(values):
        return values.astype(np.float64)
    weights = np.zeros(len(values))
    weights[-1] = 1.0
    return weights


def _numeric(values: np.ndarray) -> bool:
    """Whether class labels are numbers (bools count as 0 and 1; strings do not)."""
    if values.dtype == bool or np.issubdtype(values.dtype, np.number):
        return True
    # An object array may still hold numbers only, as some libraries' classes_ do.
    return values.dtype == object and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, str) for v in values
    )


def _unpickle(spec: ModelSpec, path: Path) -> Any:
    """`joblib.load` (which reads plain pickles too), its warnings logged once, its failures explained."""
    import joblib

    # Recorded under the filters in force, so warnings ignored anyway (deprecations)
    # stay ignored; the rest become log lines instead of stderr text.
    with warnings.catch_warnings(record=True) as caught:
        estimator, _ = unpickle(spec, path, joblib.load)
    _log_warnings(spec, caught)
    return estimator


def _log_warnings(spec: ModelSpec, caught: list[warnings.WarningMessage]) -> None:
    """One log line per distinct warning: a Pipeline of other versions warns once per step."""
    seen: set[str] = set()
    for warning in caught:
        message = str(warning.message)
        if type(warning.message).__name__ == "InconsistentVersionWarning":
            # scikit-learn warns once per estimator in the file; one line says it all.
            original = getattr(warning.message, "original_sklearn_version", "another version")
            current = getattr(warning.message, "current_sklearn_version", "this app's")
            message = (
                f"pickled with scikit-learn {original}, loaded with scikit-learn {current}; "
                "its predictions may differ"
            )
        if message not in seen:
            seen.add(message)
            log.warning("model '%s': '%s': %s", spec.name, spec.file, message)


def _check_methods(spec: ModelSpec, estimator: Any) -> None:
    """Refuse an object that lacks the method the manifest asks for, naming what it is."""
    method = spec.method.value
    if callable(getattr(estimator, method, None)):
        return
    found = type(estimator)
    kind = f"{found.__module__}.{found.__qualname__}"
    if method == "predict" and _is_function(estimator):
        advice = (
            "; a pickled predict function, as Numerai's model uploads take, is format "
            '"numerai_pickle"'
        )
    elif method == "predict_proba" and callable(getattr(estimator, "predict", None)):
        advice = '; it is not a classifier: use "method": "predict"'
    else:
        advice = "; expected a fitted estimator or Pipeline"
    raise ModelLoadError(
        f"model '{spec.name}': '{spec.file}' holds a {kind}, which has no {method}() method{advice}"
    )


def _is_function(value: Any) -> bool:
    return inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value)


def _attribute(estimator: Any, name: str) -> Any:
    """`estimator.<name>`, or None when it is absent or its property refuses.

    Fitted-attribute properties raise when the estimator does not have them
    (AttributeError, LightGBM's LGBMNotFittedError, a Pipeline whose first step
    lacks them), and any of those means "not recorded".
    """
    try:
        return getattr(estimator, name, None)
    except Exception:
        return None
