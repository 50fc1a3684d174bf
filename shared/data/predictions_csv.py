"""Predictions as CSV text, the form in which they are archived and uploaded (columns id, prediction)."""

from __future__ import annotations

import io

import pandas as pd

from shared.data.live_data import ID_COLUMN


def read_predictions(csv_text: str) -> pd.Series:
    """A predictions CSV as a Series indexed by id."""
    return pd.read_csv(io.StringIO(csv_text), index_col=ID_COLUMN)["prediction"]


def to_csv(predictions: pd.Series) -> str:
    """The CSV a worker writes for a Series of predictions indexed by id."""
    return predictions.rename("prediction").rename_axis(ID_COLUMN).reset_index().to_csv(index=False)
