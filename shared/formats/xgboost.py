"""XGBoost models saved by `Booster.save_model` (or `XGBRegressor.save_model`): `.json`, `.ubj`.

The file holds the trees and, when the model was trained on a DataFrame, its
feature names; it holds no code, so it needs no trust. Predictions are those of
`booster.predict(DMatrix(...))` with its defaults: every tree (a model trained
with early stopping predicts with all its trees unless it was saved sliced), and
the objective's transform (a probability for `binary:logistic`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.formats.base import BatchModel, as_one_column, check_width, columns_for
from shared.manifest import ModelSpec


class XGBoostModel(BatchModel):
    """A loaded XGBoost booster, predicting straight from numpy arrays."""

    def __init__(self, spec: ModelSpec, columns: list[str], booster: Any) -> None:
        super().__init__(spec, columns)
        self._booster = booster

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        # inplace_predict skips building a DMatrix (a copy of the batch) and gives the
        # same values as predict(DMatrix(...)). A bare array carries no names, so
        # XGBoost does not compare them: the columns are already in training order.
        output = self._booster.inplace_predict(features)
        return as_one_column(self.spec, output, features.shape[0])


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> XGBoostModel:
    """Load a booster; its recorded feature names stand in for a missing manifest list."""
    import xgboost

    booster = xgboost.Booster(model_file=str(path))
    recorded = booster.feature_names  # None when trained on an array
    if recorded is None and features is not None:
        check_width(spec, booster.num_features(), features)
    return XGBoostModel(spec, columns_for(spec, features, _names(recorded)), booster)


def _names(recorded: Any) -> list[str] | None:
    return None if recorded is None else [str(name) for name in recorded]
