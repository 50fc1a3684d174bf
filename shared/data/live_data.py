"""Reading a round's live data: feature sets from `features.json`, rows from `live.parquet`.

The parquet file is read with pyarrow in record batches of a fixed number of
rows, and only the columns some model needs, so memory holds one batch of
features at a time whatever the size of the round.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared.errors import DataError
from shared.manifest import ModelSpec

ID_COLUMN = "id"
FEATURE_PREFIX = "feature_"
# Numerai's v5 features are integers in five bins, 0 to 4; a missing value is set
# to 2, though older docs say NaN can occur (shared reference numerai-notes.md,
# "Data (Classic)"). NaN is therefore allowed; any other value outside is bad data.
LOWEST, HIGHEST = 0, 4


def read_feature_sets(path: Path) -> dict[str, list[str]]:
    """The feature sets of a round's `features.json` (name → column names)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        sets = document["feature_sets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path.name}: not a Numerai features.json ({exc!r})") from None
    if not isinstance(sets, dict) or not all(isinstance(v, list) for v in sets.values()):
        raise DataError(f"{path.name}: 'feature_sets' is not a mapping of names to column lists")
    return sets


def resolve_features(spec: ModelSpec, feature_sets: dict[str, list[str]]) -> list[str]:
    """The columns a model takes, in the order it was trained on."""
    if isinstance(spec.features, list):
        return spec.features
    try:
        return feature_sets[spec.features]
    except KeyError:
        raise DataError(
            f"model '{spec.name}': feature set '{spec.features}' is not in features.json; "
            f"it has: {', '.join(sorted(feature_sets))}"
        ) from None


@dataclass(frozen=True)
class FeatureBatch:
    """One batch of live rows: ids, and the projected features as float32.

    `values` holds NaN where the data has no value; each model applies its own fill.
    """

    ids: pa.Array
    values: np.ndarray
    has_missing: bool


class LiveData:
    """A round's `live.parquet`, opened once and read in batches."""

    def __init__(self, path: Path, data_version: str) -> None:
        self.path = path
        self.data_version = data_version
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"{path.name} ({data_version}): not a readable parquet file ({exc})"
            ) from None
        self.columns = frozenset(self._file.schema_arrow.names)
        if ID_COLUMN not in self.columns:
            raise DataError(f"{path.name} ({data_version}): has no '{ID_COLUMN}' column")

    @property
    def num_rows(self) -> int:
        """Rows in the file, from its metadata (nothing is read)."""
        return self._file.metadata.num_rows

    @property
    def feature_columns(self) -> list[str]:
        """Every feature column of the file, in file order (not `id`, `era` or `data_type`)."""
        return [name for name in self._file.schema_arrow.names if name.startswith(FEATURE_PREFIX)]

    def check_features(self, spec: ModelSpec, features: list[str]) -> None:
        """Raise DataError if the data lacks any of a model's features."""
        missing = [f for f in features if f not in self.columns]
        if missing:
            raise DataError(
                f"model '{spec.name}': {len(missing)} of its {len(features)} features are not in "
                f"{self.path.name} of data version {self.data_version}: {first_few(missing)}"
            )

    def checked_batches(
        self, spec: ModelSpec, columns: list[str], batch_rows: int
    ) -> Iterator[FeatureBatch]:
        """`batches`, ending in a DataError that names every column with a value outside 0–4.

        No batch is yielded after the first bad one; the rest of the file is
        still read, only to name every bad column at once.
        """
        bad: dict[int, float] = {}
        for batch in self.batches(columns, batch_rows):
            for position, value in out_of_range(batch.values).items():
                bad.setdefault(position, value)
            if not bad:
                yield batch
        if bad:
            named = [f"{columns[position]} ({bad[position]:g})" for position in sorted(bad)]
            verb = "has" if len(bad) == 1 else "have"
            raise DataError(
                f"model '{spec.name}': {len(bad)} of its {len(columns)} features {verb} values outside "
                f"{LOWEST}–{HIGHEST} in {self.path.name} of data version {self.data_version}: {first_few(named)}"
            )

    def batches(self, columns: list[str], batch_rows: int) -> Iterator[FeatureBatch]:
        """Yield the rows in file order, `batch_rows` at a time, projected to `columns`."""
        try:
            for batch in self._file.iter_batches(
                batch_size=batch_rows, columns=[ID_COLUMN, *columns]
            ):
                features = batch.drop_columns([ID_COLUMN])
                values, has_missing = _to_float32(features)
                yield FeatureBatch(batch.column(ID_COLUMN), values, has_missing)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"{self.path.name} ({self.data_version}): reading failed ({exc})"
            ) from None


def out_of_range(values: np.ndarray) -> dict[int, float]:
    """The columns (by position) of a batch holding a value outside 0–4, each with its furthest value."""
    if not len(values):
        return {}
    # fmin/fmax skip NaN and reduce column by column, without a temporary of the batch's size.
    low = np.fmin.reduce(values, axis=0)
    high = np.fmax.reduce(values, axis=0)
    return {
        int(position): float(high[position] if high[position] > HIGHEST else low[position])
        for position in np.flatnonzero((low < LOWEST) | (high > HIGHEST))
    }


def first_few(names: list[str], shown: int = 5) -> str:
    """The first names, and how many more there are, for a one-line message."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _to_float32(batch: pa.RecordBatch) -> tuple[np.ndarray, bool]:
    """Copy a batch's columns into one row-major float32 matrix; NaN marks a missing value."""
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DataError(f"column '{name}' holds {column.type}, not numbers")
    has_missing = any(column.null_count for column in batch.columns)
    # Stacking the narrow int8 columns first and converting once is the fastest
    # route measured (columns with nulls arrive as float64 with NaN).
    stacked = np.stack([column.to_numpy(zero_copy_only=False) for column in batch.columns])
    return stacked.T.astype(np.float32, order="C"), has_missing
