"""CatBoost models saved with `save_model` in CatBoost's own binary format (`.cbm`).

Every model predicts `RawFormulaVal`, the sum of its trees, which is what a
regressor's `predict` returns. For a binary classifier that is the log-odds of
its second class: ranked (the default output) it orders rows as P(class 1)
does, but it is not a probability, so `"output": "raw"` would fail validation.
Models with several outputs (multi-class, multi-target) and models with
categorical features are refused when loaded: the engine passes one float32
array of features and takes one value per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, as_one_column, columns_for
from shared.manifest import ModelSpec

PREDICTION_TYPE = "RawFormulaVal"


class CatBoostModel(BatchModel):
    """A loaded CatBoost model."""

    def __init__(self, spec: ModelSpec, columns: list[str], model: Any) -> None:
        super().__init__(spec, columns)
        self._model = model

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        output = self._model.predict(features, prediction_type=PREDICTION_TYPE)
        return as_one_column(self.spec, output, features.shape[0])


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> CatBoostModel:
    """Load a `.cbm` model; its recorded feature names stand in for a missing manifest list."""
    import catboost

    model = catboost.CatBoost()
    model.load_model(str(path), format="cbm")
    _check_supported(spec, model)
    names = [str(name) for name in model.feature_names_]
    return CatBoostModel(
        spec, columns_for(spec, features, recorded_names(names), len(names)), model
    )


def recorded_names(names: list[str]) -> list[str] | None:
    """The feature names a CatBoost model records, or None for its "0", "1", … placeholders."""
    if all(name == str(i) for i, name in enumerate(names)):
        return None  # trained on a bare array: the names say nothing
    return names


def _check_supported(spec: ModelSpec, model: Any) -> None:
    """Refuse models whose predictions cannot be one float per row from float features."""
    categorical = model.get_cat_feature_indices()
    if categorical:
        names = [model.feature_names_[i] for i in categorical[:5]]
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' has categorical features ({', '.join(names)}"
            f"{', …' if len(categorical) > 5 else ''}), which this app does not pass; Numerai's "
            "features are numbers 0-4, so retrain without cat_features"
        )
    # A one-row probe: the output's width is the model's dimension, whatever its loss.
    row = np.zeros((1, len(model.feature_names_)), np.float32)
    probe = model.predict(row, prediction_type=PREDICTION_TYPE)
    width = np.asarray(probe).reshape(1, -1).shape[1]
    if width != 1:
        loss = model.get_all_params().get("loss_function", "unknown")
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' predicts {width} values per row (loss "
            f"{loss}); only models with one output (regressors, binary classifiers) are supported"
        )
