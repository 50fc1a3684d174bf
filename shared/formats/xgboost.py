"""XGBoost models saved by `Booster.save_model` (or `XGBRegressor.save_model`): `.json`, `.ubj`.

The file holds the trees and, when the model was trained on a DataFrame, its
feature names; it holds no code, so it needs no trust. Predictions are those of
the API that saved the file, with the objective's transform applied (a
probability for `binary:logistic`):
- a native booster (`xgboost.train`, then `save_model`) predicts as
  `booster.predict(DMatrix(...))`: with every tree, even when it was trained
  with early stopping (XGBoost documents slicing the booster for that);
- a file saved by `XGBRegressor.save_model` (it marks the file "scikit_learn")
  predicts as `XGBRegressor.predict` does once loaded: up to its best
  iteration when it was trained with early stopping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from shared.formats.base import BatchModel, as_one_column, columns_for
from shared.manifest import ModelSpec


class XGBoostModel(BatchModel):
    """A loaded XGBoost booster, predicting straight from numpy arrays."""

    def __init__(self, spec: ModelSpec, columns: list[str], booster: Any) -> None:
        super().__init__(spec, columns)
        self._booster = booster
        self._iterations = iteration_range(booster)

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        # inplace_predict skips building a DMatrix (a copy of the batch) and gives the
        # same values as predict(DMatrix(...)). A bare array carries no names, so
        # XGBoost does not compare them: the columns are already in training order.
        output = self._booster.inplace_predict(features, iteration_range=self._iterations)
        return as_one_column(self.spec, output, features.shape[0])


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> XGBoostModel:
    """Load a booster; its recorded feature names stand in for a missing manifest list."""
    import xgboost

    booster = xgboost.Booster(model_file=str(path))
    recorded = _names(booster.feature_names)  # None when trained on an array
    return XGBoostModel(
        spec, columns_for(spec, features, recorded, booster.num_features()), booster
    )


def iteration_range(booster: Any) -> tuple[int, int]:
    """The trees to predict with: (0, 0) for all of them, as `Booster.predict` uses.

    XGBoost's scikit-learn API stops at `best_iteration` when early stopping set
    one (except for linear boosters), so a file it saved does the same here.
    """
    best = booster.attr("best_iteration")
    if booster.attr("scikit_learn") is None or best is None:
        return (0, 0)
    config = json.loads(booster.save_config())
    if config["learner"]["gradient_booster"]["name"] == "gblinear":
        return (0, 0)
    return (0, int(best) + 1)


def _names(recorded: Any) -> list[str] | None:
    return None if recorded is None else [str(name) for name in recorded]
