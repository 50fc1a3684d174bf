"""Ensembles of manifest entries, and neutralization, in the run's process.

Both work on predictions already made (by a worker, or archived by an earlier
run or another queue task), so each model is predicted once however many
ensembles use it. The arithmetic is numerai-tools' (shared/data/prediction_maths.py);
this module finds the inputs: the members' predictions and the round's data.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from shared.data.live_data import ID_COLUMN, LiveData, first_few, read_feature_sets
from shared.data.prediction_maths import neutralize, rank_average
from shared.data.predictions_csv import read_predictions, to_csv
from shared.data.submission_rules import validate_submission
from shared.errors import AppError, PostprocessError
from shared.manifest import ModelSpec
from shared.report import Mode, ModelReport, ModelStatus
from shared.steps.benchmark_check import Benchmark, load_benchmark
from shared.steps.context import RoundContext
from shared.steps.predict import ENSEMBLE_ETAG, Prediction
from shared.steps.round_data import BENCHMARK, FEATURES, LIVE, RoundFetcher
from shared.storage.archive import PREDICTIONS, TEST_PREDICTIONS
from shared.worker.protocol import ModelOutcome


class RoundInputs:
    """The round's data that post-processing and the benchmark check read, each loaded when first needed."""

    def __init__(self, data: RoundFetcher, benchmark_model: str | None) -> None:
        """`data` gives the round's files, downloading each when first needed."""
        self._data = data
        self._benchmark_model = benchmark_model

    @cached_property
    def benchmark(self) -> Benchmark:
        """This data version's benchmark column (BENCHMARK_MODEL, or the version's main one)."""
        return load_benchmark(
            self._data.file(BENCHMARK), self._benchmark_model, self._data.data_version
        )

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
                raise PostprocessError(
                    f"model '{entry}': neutralize.features '{selection}' is not a feature set "
                    f"of this round's features.json; it has: {', '.join(sorted(sets))}"
                )
            columns = sets[selection]
        live = LiveData(self._data.file(LIVE), self._data.data_version)
        missing = [c for c in columns if c not in live.columns]
        if missing:
            raise PostprocessError(
                f"model '{entry}': {len(missing)} of the {len(columns)} columns to neutralize "
                f"against are not in this round's live data ({self._data.data_version}): "
                f"{first_few(missing)}"
            )
        return _read_columns(live.path, columns)


def neutralized(spec: ModelSpec, csv_text: str, inputs: RoundInputs) -> str:
    """The entry's predictions neutralized as its manifest entry says."""
    assert spec.neutralize is not None
    features = inputs.features(spec.name, spec.neutralize.features)
    return to_csv(
        neutralize(spec.name, read_predictions(csv_text), features, spec.neutralize.proportion)
    )


def combined(spec: ModelSpec, members: dict[str, str]) -> str:
    """The ensemble's predictions: its members' (name → CSV text) rank-averaged with its weights."""
    assert spec.members is not None
    predictions = {name: read_predictions(text) for name, text in members.items()}
    return to_csv(rank_average(spec.name, predictions, spec.members))


def _read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """Some columns of a live.parquet, indexed by id (however pandas stored the id: column or index)."""
    table = pq.read_table(path, columns=[ID_COLUMN, *columns])
    return table.to_pandas(ignore_metadata=True).set_index(ID_COLUMN)


def neutralize_prediction(prediction: Prediction, inputs: RoundInputs) -> Prediction:
    """A model's new predictions neutralized as its entry asks; archived ones were neutralized when made."""
    spec = prediction.spec
    if (
        spec.neutralize is None
        or prediction.from_archive
        or not prediction.outcome.ok
        or prediction.csv is None
    ):
        return prediction
    try:
        prediction.csv = neutralized(spec, prediction.csv, inputs)
    except AppError as exc:
        # The raw predictions stay, archived as rejected: nothing computed is lost.
        prediction.outcome.fail(f"model '{spec.name}': neutralization failed: {exc}")
    return prediction


def ensemble_prediction(
    ctx: RoundContext,
    spec: ModelSpec,
    made: dict[str, Prediction],
    elsewhere: dict[str, ModelReport],
    inputs: RoundInputs,
) -> Prediction:
    """An ensemble's predictions from its members': made in this run or task, or archived in this round.

    `elsewhere` holds the lines of members this step did not predict (another queue task's, or a
    line the run decided before predicting): a failed member fails the ensemble.
    """
    outcome = ModelOutcome(name=spec.name)
    try:
        members = {
            name: _member_csv(ctx, spec, name, made, elsewhere) for name in spec.members or {}
        }
        try:
            csv = combined(spec, members)
        except PostprocessError as exc:
            raise PostprocessError(f"{exc}{_mixed_versions(ctx, spec)}") from None
        if spec.neutralize is not None:
            csv = neutralized(spec, csv, inputs)
        validate_submission(spec, read_predictions(csv).reset_index(), inputs.live_ids)
    except AppError as exc:
        outcome.error = str(exc)
        return Prediction(spec, outcome, ENSEMBLE_ETAG, None)
    outcome.ok, outcome.rows = True, csv.count("\n") - 1
    return Prediction(spec, outcome, ENSEMBLE_ETAG, csv)


def _mixed_versions(ctx: RoundContext, ensemble: ModelSpec) -> str:
    """Words to add to an ensemble's error when its members predict from different data versions."""
    versions = {
        m: ctx.data_version(ctx.entries[m])
        for m in ensemble.members or {}
        if m in ctx.entries and not ctx.entries[m].is_ensemble
    }
    if len(set(versions.values())) < 2:
        return ""
    used = ", ".join(f"'{m}' {v}" for m, v in versions.items())
    return (
        f"; its members use different data versions ({used}), which an ensemble allows only when "
        "they predict the same live ids"
    )


def _member_csv(
    ctx: RoundContext,
    ensemble: ModelSpec,
    member: str,
    made: dict[str, Prediction],
    elsewhere: dict[str, ModelReport],
) -> str:
    """A member's predictions for the round; PostprocessError naming the member if it has none."""
    failed = PostprocessError(
        f"ensemble '{ensemble.name}': member '{member}' failed, so the ensemble was not made"
    )
    if member in made:
        prediction = made[member]
        if not prediction.outcome.ok or prediction.csv is None:
            raise failed
        return prediction.csv
    line = elsewhere.get(member)
    if line is not None and line.status is ModelStatus.FAILED:
        raise failed
    csv = _archived_member(ctx, member)
    if csv is None:
        raise PostprocessError(
            f"ensemble '{ensemble.name}': member '{member}' has no predictions for round "
            f"{ctx.round_number}"
        )
    return csv


def _archived_member(ctx: RoundContext, name: str) -> str | None:
    """A member's predictions archived in this round (by this run's mode, or submitted), or None."""
    folders = [TEST_PREDICTIONS, PREDICTIONS] if ctx.mode is Mode.TEST else [PREDICTIONS]
    for folder in folders:
        csv = ctx.results.archive.read(ctx.round_number, name, folder)
        if csv is not None:
            return csv
    return None
