"""The whole model step (process_models) without a worker: a scheduled run of a round whose
predictions an earlier run archived, over in-memory fakes and two small parquet files.

A model whose archive may be reused never reaches a worker; one whose archive may not is
fetched, and the fake model store refuses, so the test sees that it would have been predicted.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shared.data.benchmarks import MAIN_BENCHMARK
from shared.report import Mode, ModelStatus, SubmissionState
from shared.steps.models import process_models
from shared.steps.predict import made_from
from shared.steps.round_data import BENCHMARK, LIVE, FetcherFor, RoundFetcher
from shared.storage.archive import PREDICTIONS, Archived
from tests.fakes import FALLING, IDS, RISING, ROUND, World, csv_of, model, world

A, B = model("a"), model("b")
# Unequal weights: RISING and FALLING averaged equally would tie every id, which Numerai refuses.
E = model("e", members={"a": 2, "b": 1})
ACCOUNT = {"a": "id-a", "b": "id-b", "e": "id-e"}


def round_data(w: World, folder: Path) -> FetcherFor:
    """The round's live ids and benchmark, already on disk: RoundFetcher never downloads them."""

    def data(version: str) -> RoundFetcher:
        directory = folder / version
        if not directory.exists():
            directory.mkdir(parents=True)
            pd.DataFrame({"id": IDS, "feature_x": range(len(IDS))}).to_parquet(directory / LIVE)
            benchmark = pd.DataFrame({"id": IDS, MAIN_BENCHMARK[version]: RISING})
            benchmark.to_parquet(directory / BENCHMARK)
        return RoundFetcher(w.numerai, directory, ROUND, version)  # type: ignore[arg-type]

    return data


def archive_earlier_run(w: World, *values: tuple[str, list[float]], **changed: str) -> None:
    """What an earlier scheduled run of the round archived for each model, and what from."""
    for name, predictions in values:
        spec = {"a": A, "b": B}[name]
        metadata = {**made_from(w.ctx, spec, f"etag-{spec.file}"), **changed}
        w.archive.blobs[(PREDICTIONS, ROUND, name)] = Archived(csv_of(predictions), metadata)


def test_archived_predictions_are_reused_combined_and_submitted(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    archive_earlier_run(w, ("a", RISING), ("b", FALLING))
    done = process_models(w.ctx, [A, B, E], ACCOUNT, tmp_path, round_data(w, tmp_path / "data"))
    assert done.stopped is None and w.models.fetched == []  # nothing predicted again
    lines = done.lines
    assert [(n, line.status) for n, line in lines.items()] == [
        ("a", ModelStatus.SUBMITTED),
        ("b", ModelStatus.SUBMITTED),
        ("e", ModelStatus.SUBMITTED),
    ]
    assert lines["a"].from_archive and lines["b"].from_archive and not lines["e"].from_archive
    assert (lines["a"].benchmark_corr, lines["b"].benchmark_corr) == (1.0, -1.0)
    assert lines["e"].predictions_blob == f"{PREDICTIONS}/round-{ROUND}/e.csv"
    assert lines["e"].data_version is None  # an ensemble predicts from no data version of its own
    # What was archived is what was uploaded, and each submission is in the ledger.
    uploaded = {name: text for name, _, text in w.numerai.uploads}
    assert uploaded["a"] == csv_of(RISING) and uploaded["e"] == w.archive.read(ROUND, "e")
    assert {n: line.submission for n, line in lines.items()} == dict.fromkeys(
        "abe", SubmissionState.EXISTS
    )
    assert sorted(name for _, name in w.ledger.entries) == ["a", "b", "e"]


@pytest.mark.parametrize("changed", ["model_etag", "data_version", "entry_digest"])
def test_an_archive_made_from_something_else_is_predicted_again(
    tmp_path: Path, changed: str
) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    archive_earlier_run(w, ("a", RISING), **{changed: "something else"})
    archive_earlier_run(w, ("b", FALLING))
    done = process_models(w.ctx, [A, B, E], ACCOUNT, tmp_path, round_data(w, tmp_path / "data"))
    assert w.models.fetched == ["a.txt"]  # only a goes to be predicted
    a, b, e = done.lines["a"], done.lines["b"], done.lines["e"]
    assert (a.status, a.error) == (
        ModelStatus.FAILED,
        "model 'a': blob 'a.txt' is not downloaded in a unit test",
    )
    assert b.status is ModelStatus.SUBMITTED and b.from_archive
    assert (e.status, e.error) == (
        ModelStatus.FAILED,
        "ensemble 'e': member 'a' failed, so the ensemble was not made",
    )
    assert [name for name, _, _ in w.numerai.uploads] == ["b"]


def test_a_test_run_predicts_anew_uploads_nothing_and_notes_the_ledger(tmp_path: Path) -> None:
    # A test run proves that the models work today: what a scheduled run archived is not proof.
    w = world(Mode.TEST, account=ACCOUNT, work_dir=tmp_path)
    archive_earlier_run(w, ("a", RISING), ("b", FALLING))
    w.ledger.add("b", "sub-b")
    done = process_models(w.ctx, [A, B], ACCOUNT, tmp_path, round_data(w, tmp_path / "data"))
    assert w.models.fetched == ["a.txt", "b.txt"]
    assert w.numerai.uploads == [] and done.stopped is None
    b = done.lines["b"]
    assert (b.submission_id, b.submission) == ("sub-b", SubmissionState.EXISTS)
    assert done.lines["a"].submission is SubmissionState.NONE
