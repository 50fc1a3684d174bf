"""The benchmark check: before upload, each submission's rank correlation with Numerai's benchmark.

A model fed the wrong columns (a changed feature list, a new data version) still
predicts numbers that pass every submission rule; the one cheap sign is that they
no longer look like the benchmark models' predictions for the round, or not as
much as they did in the model's recent rounds. The report and telemetry carry
both figures; `min_benchmark_corr` and `max_benchmark_corr_drop` in the manifest
turn the check into a gate that holds the model back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from shared.data.benchmarks import choose_column
from shared.data.live_data import ID_COLUMN
from shared.data.prediction_maths import benchmark_corr, gate_reason, recent_median
from shared.data.predictions_csv import read_predictions
from shared.manifest import ModelSpec
from shared.report import ModelReport
from shared.storage.archive import Archive

log = logging.getLogger(__name__)

# Rounds looked back for the model's usual correlation: two weeks of daily rounds.
HISTORY_ROUNDS = 10


@dataclass(frozen=True)
class Benchmark:
    """The round's benchmark predictions, or why there are none."""

    predictions: pd.Series | None
    problem: str | None = None
    column: str | None = None  # the column compared with
    note: str | None = None  # a stand-in for the version's main column was used


def load_benchmark(path: Path, setting: str | None, data_version: str) -> Benchmark:
    """Read the version's benchmark column of live_benchmark_models.parquet, indexed by id.

    BENCHMARK_MODEL (`setting`) names the column when set; unset, each data version's main
    benchmark is used (shared.data.benchmarks).
    """
    names = pq.read_schema(path).names
    if ID_COLUMN not in names:
        return Benchmark(None, "the round's live_benchmark_models.parquet has no 'id' column")
    choice = choose_column(names, data_version, setting)
    if choice.column is None:
        return Benchmark(None, choice.problem)
    column = choice.column
    if choice.note:
        log.info("%s", choice.note)
    # Without pandas' metadata the ids are a column whatever the writer made of them: then the index.
    frame = (
        pq.read_table(path, columns=[ID_COLUMN, column])
        .to_pandas(ignore_metadata=True)
        .set_index(ID_COLUMN)
    )
    return Benchmark(frame[column].astype("float64"), column=column, note=choice.note)


def check(
    spec: ModelSpec,
    line: ModelReport,
    csv_text: str,
    benchmark: Benchmark,
    archive: Archive,
    round_number: int,
) -> bool:
    """Fill in the line's benchmark figures; False (and the line held back) if the gate stops the model."""
    if benchmark.predictions is None:
        return _unchecked(spec, line, f"the benchmark check could not run: {benchmark.problem}")
    line.benchmark_model = benchmark.column
    if benchmark.note:
        line.notes.append(f"model '{spec.name}': {benchmark.note}")
    corr = benchmark_corr(read_predictions(csv_text), benchmark.predictions)
    if not math.isfinite(corr):
        return _unchecked(
            spec,
            line,
            "the benchmark check could not run: the correlation with the benchmark "
            "is undefined (constant predictions or benchmark, or no live ids in common)",
        )
    history = archive.benchmark_history(spec.name, round_number, HISTORY_ROUNDS)
    median = recent_median(history)
    line.benchmark_corr = round(corr, 4)
    line.benchmark_corr_median = None if median is None else round(median, 4)
    reason = gate_reason(
        spec.name, corr, history, spec.min_benchmark_corr, spec.max_benchmark_corr_drop
    )
    if reason is not None:
        log.warning("%s", reason)
        line.hold_back(reason)
        return False
    return True


def _unchecked(spec: ModelSpec, line: ModelReport, problem: str) -> bool:
    """A model the check could not judge: held back if its entry has a gate, else a warning."""
    text = f"model '{spec.name}': {problem}"
    if spec.min_benchmark_corr is not None or spec.max_benchmark_corr_drop is not None:
        line.hold_back(f"{text}; the model has a gate in the manifest, so it was held back")
        return False
    line.warnings.append(text)
    return True
