"""Numerai-shaped synthetic rounds and small trained models, for tests, the demo and the benchmark.

A round is what Numerai serves for one data version: `features.json` with the
feature sets `small`, `medium` and `all`, and `live.parquet` with an `id` index,
`era`, `data_type` and int8 feature columns in 0..4. Models are trained on
synthetic rows from the same distribution, so their predictions are real.
Nothing here is committed as a binary: every file is generated when needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.data.benchmarks import MAIN_BENCHMARK, version_prefix

log = logging.getLogger(__name__)

# Sizes of Numerai's v5 feature sets; smaller rounds scale them down.
NUMERAI_ALL, NUMERAI_MEDIUM, NUMERAI_SMALL = 2748, 780, 42
LIVE_ROWS = 6720


@dataclass(frozen=True)
class SyntheticRound:
    """Where a generated round's files are, and the facts tests need about it."""

    directory: Path
    feature_sets: dict[str, list[str]]
    ids: list[str]

    @property
    def live_path(self) -> Path:
        return self.directory / "live.parquet"

    @property
    def features_path(self) -> Path:
        return self.directory / "features.json"

    @property
    def benchmark_path(self) -> Path:
        return self.directory / "live_benchmark_models.parquet"


def feature_names(n_features: int) -> list[str]:
    """Column names in Numerai's style."""
    return [f"feature_{i:04d}" for i in range(n_features)]


def feature_sets_for(n_features: int) -> dict[str, list[str]]:
    """`small` ⊂ `medium` ⊂ `all`, in Numerai's proportions."""
    names = feature_names(n_features)
    small = max(2, round(n_features * NUMERAI_SMALL / NUMERAI_ALL))
    medium = max(small + 1, round(n_features * NUMERAI_MEDIUM / NUMERAI_ALL))
    # Numerai's sets are not prefixes of one another; a stride keeps them spread out.
    return {
        "small": names[:: max(1, n_features // small)][:small],
        "medium": names[:: max(1, n_features // medium)][:medium],
        "all": names,
    }


def write_round(
    directory: Path,
    rows: int = LIVE_ROWS,
    n_features: int = NUMERAI_ALL,
    *,
    missing_fraction: float = 0.0,
    seed: int = 0,
    era: str = "1200",
    data_version: str = "v5.3",
) -> SyntheticRound:
    """Write `features.json`, `live.parquet` and `live_benchmark_models.parquet` (with `data_version`'s
    benchmark columns)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sets = feature_sets_for(n_features)
    (directory / "features.json").write_text(
        json.dumps({"feature_sets": sets, "targets": ["target", "target_cyrusd_20"]}, indent=1)
    )
    ids = _ids(rng, rows)
    table = _live_table(rng, ids, sets["all"], missing_fraction, era)
    # One write_table call, as pandas.to_parquet would write it: the engine must
    # cope with whatever row groups the file has.
    pq.write_table(table, directory / "live.parquet")
    write_benchmark(directory, ids, data_version, rng)
    log.info("wrote a round of %d rows × %d features to %s", rows, n_features, directory)
    return SyntheticRound(directory, sets, ids)


def write_benchmark(
    directory: Path, ids: list[str], data_version: str, rng: np.random.Generator
) -> Path:
    """`live_benchmark_models.parquet` as Numerai names it per version: only that version's columns.

    v5.3's file has `v53_*` columns and none of v5.2's (example-scripts at the v5.3 release), so a
    default that names another version's column fails here as it would at Numerai.
    """
    prefix = version_prefix(data_version)
    main = [MAIN_BENCHMARK[data_version]] if data_version in MAIN_BENCHMARK else []
    columns = [*main, f"{prefix}lgbm_cyrusd20"]
    frame = pd.DataFrame({c: rng.random(len(ids)) for c in columns}, index=pd.Index(ids, name="id"))
    path = directory / "live_benchmark_models.parquet"
    frame.to_parquet(path)
    return path


def _ids(rng: np.random.Generator, rows: int) -> list[str]:
    raw = rng.choice(2**60, size=rows, replace=False)
    return [f"n{value:015x}" for value in raw]


def _live_table(
    rng: np.random.Generator, ids: list[str], features: list[str], missing_fraction: float, era: str
) -> pa.Table:
    rows = len(ids)
    arrays: list[pa.Array] = [pa.array(ids), pa.array([era] * rows), pa.array(["live"] * rows)]
    for _ in features:
        values = rng.integers(0, 5, size=rows, dtype=np.int8)
        mask = rng.random(rows) < missing_fraction if missing_fraction else None
        arrays.append(pa.array(values, mask=mask))
    schema_metadata = {b"pandas": _pandas_metadata(features)}
    return pa.Table.from_arrays(
        arrays, names=["id", "era", "data_type", *features]
    ).replace_schema_metadata(schema_metadata)


def _pandas_metadata(features: list[str]) -> bytes:
    # Tells pandas.read_parquet that `id` is the index, as in Numerai's files.
    columns = [
        {
            "name": n,
            "field_name": n,
            "pandas_type": "unicode",
            "numpy_type": "object",
            "metadata": None,
        }
        for n in ("id", "era", "data_type")
    ]
    columns += [
        {"name": n, "field_name": n, "pandas_type": "int8", "numpy_type": "int8", "metadata": None}
        for n in features
    ]
    return json.dumps(
        {
            "index_columns": ["id"],
            "column_indexes": [],
            "columns": columns,
            "pandas_version": pd.__version__,
        }
    ).encode()


def training_rows(features: list[str], rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic training data whose target depends on a few features."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=(rows, len(features))).astype(np.float32)
    weights = np.zeros(len(features), dtype=np.float32)
    informative = rng.choice(len(features), size=max(1, len(features) // 10), replace=False)
    weights[informative] = rng.normal(size=len(informative))
    signal = (x - 2.0) @ weights
    y = 1.0 / (1.0 + np.exp(-signal / (np.std(signal) + 1e-6))) + rng.normal(0, 0.05, rows)
    return x, np.clip(y, 0, 1).astype(np.float32)
