"""LightGBM boosters saved with `Booster.save_model` (LightGBM's text format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelLoadError
from shared.formats.base import BatchModel, as_one_column, columns_for
from shared.manifest import ModelSpec


class LightGBMModel(BatchModel):
    """A loaded LightGBM booster."""

    def __init__(self, spec: ModelSpec, columns: list[str], booster: Any) -> None:
        super().__init__(spec, columns)
        self._booster = booster

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        return as_one_column(self.spec, self._booster.predict(features), features.shape[0])


def load(spec: ModelSpec, path: Path, features: list[str] | None) -> LightGBMModel:
    """Load a booster; its recorded feature names stand in for a missing manifest list."""
    if path.suffix.lower() == ".json":
        # dump_model() JSON is a description of the trees; LightGBM itself cannot load it.
        # Sniffing names the JSON it recognises; this one may still be another library's.
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.file}' is JSON, which LightGBM cannot load; "
            "save a LightGBM booster with booster.save_model('model.txt') instead "
            '(an XGBoost JSON model is format "xgboost")'
        )
    import lightgbm

    booster = lightgbm.Booster(model_file=str(path))
    columns = columns_for(
        spec, features, recorded_names(booster.feature_name()), booster.num_feature()
    )
    return LightGBMModel(spec, columns, booster)


def recorded_names(names: list[str]) -> list[str] | None:
    """The feature names a LightGBM model records, or None for its `Column_<i>` placeholders."""
    if all(name == f"Column_{i}" for i, name in enumerate(names)):
        return None  # trained on a bare array: the names say nothing
    return list(names)
