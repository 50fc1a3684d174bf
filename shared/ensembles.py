"""Post-processing in the run's process: ensembles of manifest entries, and neutralization.

Both work on predictions already made (by a worker, or archived by an earlier
run or another queue task), so each model is predicted once however many
ensembles use it. The arithmetic is numerai-tools' (shared/postprocess.py);
this module finds the inputs: the members' predictions and the round's data.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from shared.benchmark_check import Benchmark, load_benchmark
from shared.errors import PostprocessError
from shared.manifest import ModelSpec
from shared.postprocess import neutralize, rank_average
from shared.predictions_csv import read_predictions, to_csv
from shared.round_data import BENCHMARK, FEATURES, LIVE, RoundFetcher
from shared.worker.live_data import ID_COLUMN, LiveData, first_few, read_feature_sets


class RoundInputs:
    """The round's data that post-processing and the benchmark check read, each loaded when first needed."""

    def __init__(self, data: RoundFetcher, benchmark_model: str) -> None:
        """`data` gives the round's files, downloading each when first needed."""
        self._data = data
        self._benchmark_model = benchmark_model

    @cached_property
    def benchmark(self) -> Benchmark:
        """The BENCHMARK_MODEL column of the round's benchmark predictions."""
        return load_benchmark(self._data.file(BENCHMARK), self._benchmark_model)

    @cached_property
    def live_ids(self) -> pd.Index:
        """The round's live ids."""
        return _read_columns(self._data.file(LIVE), []).index

    def features(self, entry: str, selection: str | list[str]) -> pd.DataFrame:
        """The live features a neutralization names (a feature set or columns), indexed by id."""
        if isinstance(selection, list):
            columns = selection
        else:
            sets = read_feature_sets(self._data.file(FEATURES))
            if selection not in sets:
                raise PostprocessError(f"model '{entry}': neutralize.features '{selection}' is not a feature set "
                                       f"of this round's features.json; it has: {', '.join(sorted(sets))}")
            columns = sets[selection]
        live = LiveData(self._data.file(LIVE), self._data.data_version)
        missing = [c for c in columns if c not in live.columns]
        if missing:
            raise PostprocessError(f"model '{entry}': {len(missing)} of the {len(columns)} columns to neutralize "
                                   f"against are not in this round's live data ({self._data.data_version}): "
                                   f"{first_few(missing)}")
        return _read_columns(live.path, columns)


def neutralized(spec: ModelSpec, csv_text: str, inputs: RoundInputs) -> str:
    """The entry's predictions neutralized as its manifest entry says."""
    assert spec.neutralize is not None
    features = inputs.features(spec.name, spec.neutralize.features)
    return to_csv(neutralize(spec.name, read_predictions(csv_text), features, spec.neutralize.proportion))


def combined(spec: ModelSpec, members: dict[str, str]) -> str:
    """The ensemble's predictions: its members' (name → CSV text) rank-averaged with its weights."""
    assert spec.members is not None
    predictions = {name: read_predictions(text) for name, text in members.items()}
    return to_csv(rank_average(spec.name, predictions, spec.members))


def _read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """Some columns of a live.parquet, indexed by id (however pandas stored the id: column or index)."""
    table = pq.read_table(path, columns=[ID_COLUMN, *columns])
    return table.to_pandas(ignore_metadata=True).set_index(ID_COLUMN)
