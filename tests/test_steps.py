"""The model step's parts, as unit tests: archiving, ensembles, the upload and exactly-once
submissions.

Each test gives a step its inputs (predictions as the worker step hands them on) and in-memory
fakes of its services (tests/fakes.py), and checks the line it returns and what it left in the
fakes. No Azurite, no Numerai sandbox, no worker processes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from shared.errors import (
    LockLost,
    NumeraiApiError,
    NumeraiUnanswered,
    StorageError,
    SubmissionUnknown,
)
from shared.manifest import ModelSpec
from shared.report import Mode, ModelReport, ModelStatus, SubmissionState, utc_now
from shared.steps.archive import archive_prediction
from shared.steps.benchmark_check import Benchmark
from shared.steps.ensembles import ensemble_prediction
from shared.steps.exactly_once import LIST_LAG_SECONDS, Submitter
from shared.steps.predict import ENSEMBLE_ETAG, Prediction
from shared.steps.upload import UPLOAD_MARGIN_BYTES, upload
from shared.storage.archive import PREDICTIONS, TEST_PREDICTIONS, Archived
from shared.storage.ledger import SubmissionIntent
from tests.fakes import (
    FALLING,
    IDS,
    RISING,
    ROUND,
    RUN_ID,
    FakeInputs,
    FakeLock,
    World,
    closed_round,
    csv_of,
    model,
    open_round,
    predicted,
    world,
)

ACCOUNT = {"a": "id-a", "b": "id-b", "c": "id-c"}
# The benchmark equals RISING: a model predicting RISING correlates 1.0 with it, FALLING -1.0.
BENCHMARK = FakeInputs(Benchmark(pd.Series(RISING, index=pd.Index(IDS, name="id"))))


# archive_prediction

FOLDERS = [(Mode.SCHEDULED, PREDICTIONS), (Mode.TEST, TEST_PREDICTIONS)]


@pytest.mark.parametrize(
    ("mode", "status", "folder"),
    [
        (Mode.SCHEDULED, ModelStatus.PENDING, PREDICTIONS),  # pending: ready to upload
        # A test run writes apart: it never replaces what was uploaded.
        (Mode.TEST, ModelStatus.VALIDATED, TEST_PREDICTIONS),
    ],
)
def test_a_good_prediction_is_checked_and_archived(
    mode: Mode, status: ModelStatus, folder: str
) -> None:
    w = world(mode)
    spec = model("a")
    line = archive_prediction(w.ctx, predicted(spec), BENCHMARK)
    assert line.status is status and line.error is None
    assert (line.rows, line.benchmark_corr, line.data_version) == (10, 1.0, "v5.3")
    assert line.predictions_blob == f"{folder}/round-{ROUND}/a.csv"
    kept = w.archive.blobs[(folder, ROUND, "a")]
    assert kept == Archived(
        csv_of(RISING),
        {
            "model_etag": "etag-a",
            "data_version": "v5.3",
            "entry_digest": spec.digest(),
            "run_id": RUN_ID,
            "benchmark_corr": "1.0000",
        },
    )


@pytest.mark.parametrize(("mode", "folder"), FOLDERS)
def test_a_failed_prediction_fails_its_line_and_archives_nothing(mode: Mode, folder: str) -> None:
    w = world(mode)
    failed = predicted(model("a"), ok=False, error="model 'a': could not load")
    line = archive_prediction(w.ctx, failed, BENCHMARK)
    assert (line.status, line.error) == (ModelStatus.FAILED, "model 'a': could not load")
    assert line.predictions_blob is None and w.archive.blobs == {}


@pytest.mark.parametrize(("mode", "folder"), FOLDERS)
def test_rejected_predictions_are_kept_apart_and_fail_the_line(mode: Mode, folder: str) -> None:
    w = world(mode)
    error = "model 'a': predicted NaN for 3 of 10 rows"
    rejected = predicted(model("a"), csv_of(RISING), ok=False, error=error)
    line = archive_prediction(w.ctx, rejected, BENCHMARK)
    assert (line.status, line.error) == (ModelStatus.FAILED, error)
    assert line.predictions_blob == f"{folder}/round-{ROUND}/a.rejected.csv"
    assert line.benchmark_corr is None  # never checked: they were never going to be uploaded
    assert list(w.archive.blobs) == [(folder, ROUND, "a.rejected")]


def test_a_submit_false_model_is_predicted_without_a_benchmark_check() -> None:
    w = world()
    line = archive_prediction(w.ctx, predicted(model("m", submit=False)), BENCHMARK)
    assert line.status is ModelStatus.PREDICTED and line.benchmark_corr is None
    assert "benchmark_corr" not in w.archive.blobs[(PREDICTIONS, ROUND, "m")].metadata


def test_a_gate_holds_back_the_model_and_its_figure_stays_out_of_the_archive() -> None:
    w = world()
    spec = model("a", min_benchmark_corr=0.5)
    line = archive_prediction(w.ctx, predicted(spec, csv_of(FALLING)), BENCHMARK)
    assert line.status is ModelStatus.GATED and line.benchmark_corr == -1.0
    assert line.error is not None and "below min_benchmark_corr 0.50" in line.error
    # Archived (nothing computed is lost), but a later round's drop check must not compare with it.
    assert "benchmark_corr" not in w.archive.blobs[(PREDICTIONS, ROUND, "a")].metadata


def test_a_gate_compares_with_the_archived_figures_of_earlier_rounds() -> None:
    w = world()
    for earlier in (ROUND - 1, ROUND - 2, ROUND - 3):
        w.archive.blobs[(PREDICTIONS, earlier, "a")] = Archived("", {"benchmark_corr": "0.9"})
    spec = model("a", max_benchmark_corr_drop=0.5)
    line = archive_prediction(w.ctx, predicted(spec, csv_of(FALLING)), BENCHMARK)
    assert (line.status, line.benchmark_corr_median) == (ModelStatus.GATED, 0.9)
    assert line.error is not None
    assert "fell from 0.90 (median of the last 3 rounds) to -1.00" in line.error


def test_without_the_benchmark_a_gated_model_is_held_back_and_others_warned() -> None:
    w = world()
    missing = FakeInputs(Benchmark(None, "no column 'x'"))
    gated = archive_prediction(w.ctx, predicted(model("a", min_benchmark_corr=0.1)), missing)
    free = archive_prediction(w.ctx, predicted(model("b")), missing)
    assert gated.status is ModelStatus.GATED
    assert gated.error == (
        "model 'a': the benchmark check could not run: no column 'x'; "
        "the model has a gate in the manifest, so it was held back"
    )
    assert free.status is ModelStatus.PENDING
    assert free.warnings == ["model 'b': the benchmark check could not run: no column 'x'"]


def test_an_undefined_benchmark_correlation_leaves_the_line_standard_json() -> None:
    w = world()
    flat = FakeInputs(Benchmark(pd.Series([0.5] * len(IDS), index=pd.Index(IDS, name="id"))))
    line = archive_prediction(w.ctx, predicted(model("a")), flat)
    assert line.status is ModelStatus.PENDING  # ungated: not held back
    assert line.benchmark_corr is None
    assert line.warnings == [
        "model 'a': the benchmark check could not run: the correlation with the "
        "benchmark is undefined (constant predictions or benchmark, or no live ids "
        "in common)"
    ]
    gated = archive_prediction(w.ctx, predicted(model("g", min_benchmark_corr=0.1)), flat)
    assert gated.status is ModelStatus.GATED and "undefined" in (gated.error or "")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    json.loads(line.to_json(), parse_constant=refuse)


@pytest.mark.parametrize("mode", [Mode.SCHEDULED, Mode.TEST])
@pytest.mark.parametrize("submit", [True, False])
def test_a_storage_failure_while_archiving_fails_the_line_before_any_upload(
    mode: Mode, submit: bool
) -> None:
    # Whatever the mode and entry, the failure is the line's last word (not validated, predicted).
    w = world(mode)
    w.archive.fail_write = StorageError("could not write 'predictions/round-1200/a.csv': 503")
    line = archive_prediction(w.ctx, predicted(model("a", submit=submit)), BENCHMARK)
    assert line.status is ModelStatus.FAILED and line.predictions_blob is None
    assert line.error == (
        "model 'a': predictions could not be archived, so they were not "
        "uploaded: could not write 'predictions/round-1200/a.csv': 503"
    )


def test_predictions_from_the_archive_are_not_written_again() -> None:
    w = world()
    line = archive_prediction(w.ctx, predicted(model("a"), from_archive=True), BENCHMARK)
    assert line.status is ModelStatus.PENDING and line.from_archive
    assert line.predictions_blob == f"{PREDICTIONS}/round-{ROUND}/a.csv"
    assert w.archive.blobs == {}


# ensemble_prediction

ENSEMBLE = model("e", members={"a": 2, "b": 1})
# The rank average of RISING (weight 2) and FALLING (weight 1), worked out by hand:
# (2 (i+1) + (10-i)) / 30 rises with i, so ranked again it is (i+1)/10.
BLENDED = [(i + 1) / 10 for i in range(10)]


def assert_blended(result: Prediction) -> None:
    assert result.outcome.ok and result.outcome.error is None and result.outcome.rows == 10
    assert result.model_etag == ENSEMBLE_ETAG and result.csv is not None
    blended = pd.read_csv(pd.io.common.StringIO(result.csv), index_col="id")["prediction"]
    assert list(blended.index) == IDS and blended.tolist() == pytest.approx(BLENDED)


def test_an_ensemble_rank_averages_its_members_csvs() -> None:
    w = world()
    made = {"a": predicted(model("a")), "b": predicted(model("b"), csv_of(FALLING))}
    assert_blended(ensemble_prediction(w.ctx, ENSEMBLE, made, {}, FakeInputs()))


def test_an_ensemble_reads_members_done_elsewhere_from_the_archive() -> None:
    w = world()
    w.archive.write(ROUND, "b", csv_of(FALLING))
    made = {"a": predicted(model("a"))}
    elsewhere = {"b": ModelReport("b", status=ModelStatus.ALREADY_SUBMITTED)}
    assert_blended(ensemble_prediction(w.ctx, ENSEMBLE, made, elsewhere, FakeInputs()))


@pytest.mark.parametrize("where", ["made", "made with rejected predictions", "elsewhere"])
def test_a_failed_member_fails_the_ensemble(where: str) -> None:
    w = world()
    # An archive of an earlier run must not stand in for a member that failed now.
    w.archive.write(ROUND, "b", csv_of(FALLING))
    made: dict[str, Prediction] = {"a": predicted(model("a"))}
    elsewhere: dict[str, ModelReport] = {}
    if where == "made":
        made["b"] = predicted(model("b"), ok=False, error="model 'b': could not load")
    elif where == "made with rejected predictions":
        # Kept for the archive (a failed neutralization, say), never for an ensemble.
        made["b"] = predicted(
            model("b"), csv_of(FALLING), ok=False, error="model 'b': neutralization failed"
        )
    else:
        elsewhere["b"] = ModelReport(
            "b", status=ModelStatus.FAILED, error="model 'b': could not load"
        )
    result = ensemble_prediction(w.ctx, ENSEMBLE, made, elsewhere, FakeInputs())
    assert not result.outcome.ok and result.csv is None
    assert result.outcome.error == "ensemble 'e': member 'b' failed, so the ensemble was not made"


def test_an_ensemble_without_a_members_predictions_says_which() -> None:
    w = world()
    result = ensemble_prediction(w.ctx, ENSEMBLE, {"a": predicted(model("a"))}, {}, FakeInputs())
    assert result.outcome.error == f"ensemble 'e': member 'b' has no predictions for round {ROUND}"


def test_an_ensemble_that_misses_live_ids_fails_the_submission_rules() -> None:
    w = world()
    made = {"a": predicted(model("a")), "b": predicted(model("b"), csv_of(FALLING))}
    one_more = FakeInputs(live_ids=pd.Index([*IDS, "n999"]))
    result = ensemble_prediction(w.ctx, ENSEMBLE, made, {}, one_more)
    assert not result.outcome.ok and result.csv is None
    assert result.outcome.error == (
        "model 'e': predictions cover 10 of 11 live ids (1 missing, 0 not in this round); "
        "predict every row of this round's live.parquet, and only those"
    )


# upload


def uploading(
    *specs: ModelSpec, statuses: dict[str, ModelStatus] | None = None
) -> tuple[dict[str, ModelReport], dict[str, Prediction]]:
    """Each spec's line (pending unless `statuses` says) and predictions, as archiving leaves them.

    Each model's CSV differs, so that an upload of the wrong one shows.
    """
    lines = {
        s.name: ModelReport(
            s.name,
            status=(statuses or {}).get(s.name, ModelStatus.PENDING),
            predictions_blob=f"{PREDICTIONS}/round-{ROUND}/{s.name}.csv",
        )
        for s in specs
    }
    made = {
        s.name: predicted(s, csv_of([v + i / 100 for v in RISING])) for i, s in enumerate(specs)
    }
    return lines, made


def test_a_normal_upload_submits_each_pending_model_once_and_records_it(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, lock=FakeLock(), work_dir=tmp_path)
    w.ctx.trigger_id = "trigger-1"
    lines, made = uploading(model("a"), model("b"), model("c"), statuses={"b": ModelStatus.GATED})
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert done.stopped is None and done.notes == []
    a = done.lines["a"]
    assert (a.status, a.submission, a.submission_id) == (
        ModelStatus.SUBMITTED,
        SubmissionState.EXISTS,
        "sub-1",
    )
    assert done.lines["b"].status is ModelStatus.GATED  # held back: never uploaded
    assert done.lines["c"].submission_id == "sub-2"
    # The very text archived is the text uploaded, byte for byte.
    assert w.numerai.uploads == [("a", "id-a", made["a"].csv), ("c", "id-c", made["c"].csv)]
    assert [trigger for _, _, trigger in w.numerai.created] == ["trigger-1", "trigger-1"]
    recorded = {name: r.submission_id for (_, name), r in w.ledger.entries.items()}
    assert recorded == {"a": "sub-1", "c": "sub-2"}
    assert w.ledger.intents == {}


def test_with_nothing_to_upload_the_round_is_not_asked_about(tmp_path: Path) -> None:
    # A failing round look-up must not replace the lines' real reasons with "not finished".
    w = world(account=ACCOUNT, work_dir=tmp_path)

    def unreachable() -> None:
        raise NumeraiApiError("Numerai could not be reached")

    w.numerai.current_round = unreachable  # type: ignore[method-assign]  # asked, the step would raise
    lines, made = uploading(
        model("a"), model("b"), statuses={"a": ModelStatus.GATED, "b": ModelStatus.FAILED}
    )
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert [done.lines[n].status for n in "ab"] == [ModelStatus.GATED, ModelStatus.FAILED]
    assert done.notes == [] and done.stopped is None and w.numerai.uploads == []


def test_a_submit_false_model_is_never_uploaded(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    lines, made = uploading(model("m", submit=False))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert done.lines["m"].status is ModelStatus.PENDING and w.numerai.uploads == []


@pytest.mark.parametrize(
    ("current", "now"), [(open_round(ROUND + 1), f"round {ROUND + 1}"), (None, "no round")]
)
def test_nothing_is_uploaded_once_the_round_moved_on(
    tmp_path: Path, current: object, now: str
) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    w.numerai.round = current  # type: ignore[assignment]
    lines, made = uploading(model("a"), model("b"), statuses={"b": ModelStatus.GATED})
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert done.lines["a"].status is ModelStatus.FAILED
    assert done.lines["a"].error == (
        f"model 'a': round {ROUND} ended during the run ({now} is "
        "current); its predictions are archived but were not "
        "uploaded"
    )
    assert done.lines["b"].status is ModelStatus.GATED  # only pending lines are decided here
    assert w.numerai.uploads == [] and done.stopped is None


def test_after_the_staking_close_without_submit_late_pending_models_missed_the_round(
    tmp_path: Path,
) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    w.numerai.round = closed_round()
    lines, made = uploading(model("a"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    a = done.lines["a"]
    assert a.status is ModelStatus.MISSED and a.error is not None
    assert a.error.startswith(f"model 'a': round {ROUND} closed for staking at ")
    assert (
        "45 min before it could be submitted; its predictions are archived "
        f"({PREDICTIONS}/round-{ROUND}/a.csv)"
    ) in a.error
    assert a.error.endswith("set SUBMIT_LATE=true to submit after the close (scored, not staked)")
    assert w.numerai.uploads == []


def test_after_the_staking_close_with_submit_late_models_are_submitted_late(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path, submit_late=True)
    w.numerai.round = closed_round()
    lines, made = uploading(model("a"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert done.lines["a"].status is ModelStatus.SUBMITTED
    assert done.lines["a"].warnings == [
        (
            "model 'a': submitted 45 min after the staking close "
            "(SUBMIT_LATE=true): scored, not staked"
        )
    ]
    assert done.notes == [
        (
            f"round {ROUND} closed for staking during the run; the submissions "
            "are late: scored, but not staked"
        )
    ]


def test_a_lost_lock_stops_the_uploads_and_leaves_later_lines_pending(tmp_path: Path) -> None:
    # Each submission confirms the lock twice (before the upload, before create_submission).
    w = world(account=ACCOUNT, work_dir=tmp_path, lock=FakeLock(holds_for=2))
    lines, made = uploading(model("a"), model("b"), model("c"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert done.lines["a"].status is ModelStatus.SUBMITTED
    assert [done.lines[n].status for n in ("b", "c")] == [ModelStatus.PENDING, ModelStatus.PENDING]
    assert done.stopped == (
        "this run could not confirm its lock 'locks/scheduled-run' (lease "
        "lost); the models not yet submitted are archived for the next run"
    )
    assert [name for name, _, _ in w.numerai.uploads] == ["a"]


def test_one_failed_lock_confirmation_stops_the_uploads_for_good(tmp_path: Path) -> None:
    # The third confirmation (model b's first) fails; a later one would pass, and must not be asked.
    w = world(account=ACCOUNT, work_dir=tmp_path, lock=FakeLock(fails_at=frozenset({3})))
    lines, made = uploading(model("a"), model("b"), model("c"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert [line.status for line in done.lines.values()] == [
        ModelStatus.SUBMITTED,
        ModelStatus.PENDING,
        ModelStatus.PENDING,
    ]
    assert done.stopped is not None and [name for name, _, _ in w.numerai.uploads] == ["a"]


def test_the_run_deadline_stops_the_uploads(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    w.ctx.ends_at = 0.0  # long past
    lines, made = uploading(model("a"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    assert done.lines["a"].status is ModelStatus.PENDING and w.numerai.uploads == []
    assert done.stopped is not None
    assert done.stopped.startswith(
        "the run reached its deadline (RUN_DEADLINE_SECONDS=1500) before uploading model 'a'"
    )


def test_a_failed_submission_fails_its_line_and_the_others_go_on(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, work_dir=tmp_path)
    w.numerai.fail_create = NumeraiApiError("model 'a': Numerai refused the submission: too many")
    lines, made = uploading(model("a"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path)
    a = done.lines["a"]
    assert (a.status, a.submission) == (ModelStatus.FAILED, SubmissionState.NONE)
    assert a.error == "model 'a': Numerai refused the submission: too many"
    assert done.stopped is None


# Submitter (exactly_once.py)


def submitter(w: World, lock: FakeLock | None = None) -> Submitter:
    return Submitter(
        w.numerai,
        w.ledger,
        ROUND,
        RUN_ID,  # type: ignore[arg-type]
        (lock or FakeLock()).confirm,
    )


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "a.csv"
    path.write_text(csv_of(RISING))
    return path


def test_created_and_listed_is_recorded_without_warnings(csv_path: Path) -> None:
    w = world()
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.submission_id, result.error, result.warnings) == (
        SubmissionState.EXISTS,
        "sub-1",
        None,
        [],
    )
    assert w.ledger.submission_for(ROUND, "a").submission_id == "sub-1"  # type: ignore[union-attr]
    assert w.ledger.intents == {}


def test_created_but_not_listed_is_recorded_with_a_warning(csv_path: Path) -> None:
    w = world()
    w.numerai.list_after_create = False
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.submission_id, result.error) == (
        SubmissionState.EXISTS,
        "sub-1",
        None,
    )
    assert result.warnings == [
        ("model 'a': Numerai created submission sub-1 but did not list it when asked")
    ]
    assert w.ledger.submission_for(ROUND, "a") is not None


def test_created_when_the_list_cannot_be_had_is_recorded_all_the_same(csv_path: Path) -> None:
    # Numerai answered with an id: the submission exists whether or not its list can be read.
    w = world()
    w.numerai.fail_listing = NumeraiApiError("Numerai answered 503")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.submission_id, result.error) == (
        SubmissionState.EXISTS,
        "sub-1",
        None,
    )
    assert result.warnings == [
        "model 'a': Numerai created submission sub-1; its submissions could not "
        "be listed to confirm it (Numerai answered 503)"
    ]
    assert w.ledger.submission_for(ROUND, "a") is not None and w.ledger.intents == {}


def test_refused_and_not_listed_means_none_and_the_intent_goes(csv_path: Path) -> None:
    w = world()
    w.numerai.fail_create = NumeraiApiError("Numerai refused: invalid submission")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.submission_id) == (SubmissionState.NONE, None)
    assert result.error == "model 'a': Numerai refused: invalid submission"
    assert w.ledger.entries == {} and w.ledger.intents == {}


def test_no_answer_and_not_listed_stays_unknown_with_the_intent_kept(csv_path: Path) -> None:
    w = world()
    w.numerai.fail_create = NumeraiUnanswered("create_submission got no answer in 60 s")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert result.state is SubmissionState.UNKNOWN
    assert result.error == (
        "model 'a': create_submission got no answer in 60 s, and Numerai "
        "does not list the upload 'a-1.csv' (yet); the next run checks "
        "again before submitting"
    )
    assert w.ledger.entries == {}
    kept = w.ledger.intent_for(ROUND, "a")
    assert kept is not None and kept.written_at  # the next run knows how long ago it was asked
    assert kept == SubmissionIntent(ROUND, "a", "id-a", "a-1.csv", RUN_ID, kept.written_at)


def test_no_answer_but_listed_is_recorded_with_a_warning(csv_path: Path) -> None:
    w = world()
    w.numerai.created_then = NumeraiUnanswered("create_submission got no answer in 60 s")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.submission_id, result.error) == (
        SubmissionState.EXISTS,
        "sub-1",
        None,
    )
    assert result.warnings == [
        (
            "model 'a': create_submission got no answer in 60 s; Numerai "
            "lists the upload, as submission sub-1"
        )
    ]
    assert w.ledger.submission_for(ROUND, "a") is not None and w.ledger.intents == {}


def test_a_failure_that_cannot_be_checked_stays_unknown(csv_path: Path) -> None:
    w = world()
    w.numerai.fail_create = NumeraiApiError("Numerai answered 502")
    w.numerai.fail_listing = NumeraiApiError("Numerai answered 503")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert result.state is SubmissionState.UNKNOWN and result.error is not None
    assert result.error.startswith(
        "model 'a': Numerai answered 502, and its submissions could "
        "not be listed (Numerai answered 503); whether it was "
        "submitted is unknown"
    )
    assert w.ledger.intent_for(ROUND, "a") is not None


def test_a_ledger_failure_after_creation_keeps_the_intent_for_the_next_run(csv_path: Path) -> None:
    w = world()
    w.ledger.fail_record = StorageError("could not write the ledger entry: 503")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.submission_id) == (SubmissionState.EXISTS, "sub-1")
    assert result.error == (
        "model 'a': submitted as sub-1, but the ledger could not record it "
        "(could not write the ledger entry: 503); the next run finds it at "
        "Numerai and does not submit again"
    )
    # The intent is what makes the next run look at Numerai instead of submitting again.
    assert w.ledger.intent_for(ROUND, "a") is not None
    w.ledger.fail_record = None  # the next run, with the ledger back
    assert submitter(w).existing("a", "id-a") == "sub-1"
    assert w.ledger.intents == {}


def test_an_intent_that_cannot_be_written_stops_before_create_submission(csv_path: Path) -> None:
    w = world()
    w.ledger.fail_intent = StorageError("could not write the submission intent: 503")
    result = submitter(w).submit("a", "id-a", csv_path)
    assert (result.state, result.error) == (
        SubmissionState.NONE,
        "model 'a': could not write the submission intent: 503",
    )
    assert w.numerai.created == []


def test_a_lock_lost_before_create_submission_creates_nothing(csv_path: Path) -> None:
    w = world()
    with pytest.raises(LockLost, match="could not confirm its lock"):
        submitter(w, FakeLock(holds_for=1)).submit("a", "id-a", csv_path)
    assert len(w.numerai.uploads) == 1 and w.numerai.created == []
    assert w.ledger.intent_for(ROUND, "a") is not None  # the next run checks Numerai first


def test_existing_reads_the_ledger_then_the_intent() -> None:
    w = world()
    w.ledger.add("a", "sub-a")
    assert submitter(w).existing("a", "id-a") == "sub-a"
    assert submitter(w).existing("b", "id-b") is None  # neither ledger nor intent
    w.ledger.intents[(ROUND, "b")] = SubmissionIntent(ROUND, "b", "id-b", "b.csv", "old-run")
    w.numerai.fail_listing = NumeraiApiError("Numerai answered 503")
    with pytest.raises(SubmissionUnknown, match="run old-run asked Numerai to submit 'b.csv'"):
        submitter(w).existing("b", "id-b")


def test_a_recorded_submission_clears_the_intent_a_killed_run_left() -> None:
    # Issue #21, item 7: killed between the ledger write and clearing the intent.
    w = world()
    w.ledger.add("a", "sub-a")
    w.ledger.intents[(ROUND, "a")] = SubmissionIntent(ROUND, "a", "id-a", "a.csv", "old-run")
    assert submitter(w).existing("a", "id-a") == "sub-a"
    assert w.ledger.intents == {}


def test_an_intent_numerai_does_not_list_yet_is_held_until_its_list_may_lag_no_more() -> None:
    # Issue #21, item 6: killed right after create_submission, and Numerai's list lags behind.
    w = world()
    fresh = SubmissionIntent(ROUND, "a", "id-a", "a.csv", "old-run", utc_now())
    w.ledger.intents[(ROUND, "a")] = fresh
    until = datetime.fromisoformat(fresh.written_at) + timedelta(seconds=LIST_LAG_SECONDS)
    with pytest.raises(SubmissionUnknown) as held:
        submitter(w).existing("a", "id-a")
    assert str(held.value) == (
        "model 'a': run old-run asked Numerai to submit 'a.csv' and never recorded the answer, and "
        "Numerai does not list it yet; its list may lag behind create_submission, so the model is "
        f"not submitted again before {until:%H:%M:%S} UTC (5 min after it was asked). "
        "A run after that submits it if Numerai still lists nothing"
    )
    assert w.ledger.intent_for(ROUND, "a") == fresh  # the next run asks again
    w.numerai.list("id-a", "a.csv", "sub-late")  # the list caught up
    assert submitter(w).existing("a", "id-a") == "sub-late" and w.ledger.intents == {}


def test_an_intent_older_than_the_list_lag_and_not_listed_is_submitted_anew() -> None:
    w = world()
    old = (datetime.now(UTC) - timedelta(seconds=LIST_LAG_SECONDS + 1)).isoformat()
    w.ledger.intents[(ROUND, "a")] = SubmissionIntent(ROUND, "a", "id-a", "a.csv", "old-run", old)
    assert submitter(w).existing("a", "id-a") is None and w.ledger.intents == {}


def test_an_upload_with_no_disk_space_for_its_csv_fails_that_model_naming_the_space(
    tmp_path: Path,
) -> None:
    # The observed failure: a model filled WORK_DIR's disk, then writing the upload CSV raised
    # "OSError: [Errno 28] No space left on device" and every model was "not finished".
    w = world(account=ACCOUNT, lock=FakeLock(), work_dir=tmp_path)
    lines, made = uploading(model("a"), model("b"))
    needed = max(len(p.csv.encode()) for p in made.values()) + UPLOAD_MARGIN_BYTES
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path, free_bytes=lambda path: needed)
    assert [line.status for line in done.lines.values()] == [ModelStatus.SUBMITTED] * 2
    assert list(tmp_path.glob("*.csv")) == []  # each removed once submitted: the next finds room

    lines, made = uploading(model("a"), model("b"))
    # A model whose worker left 3 MiB outside its folder, and one that left a trace.
    made["hog"] = Prediction.failed(model("hog"), "model 'hog': failed")
    made["hog"].outcome.disk_left_mb = 3.0
    made["b"].outcome.disk_left_mb = 0.2
    needed = len(made["a"].csv.encode()) + UPLOAD_MARGIN_BYTES
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path, free_bytes=lambda path: needed - 1)
    assert done.stopped is None
    a = done.lines["a"]
    assert a.status is ModelStatus.FAILED and a.submission is SubmissionState.NONE
    assert a.error == (
        f"model 'a': not uploaded for lack of disk space: its CSV needs {needed / 2**20:.1f} MiB "
        f"in WORK_DIR ({tmp_path}) and {(needed - 1) / 2**20:.1f} MiB is free; the models after "
        "whose workers the free space fell the most (files written outside their folders are "
        "not removed): 'hog' 3.0 MiB, 'b' 0.2 MiB. Its predictions are archived "
        "(predictions/round-1200/a.csv) and the next run submits them once "
        "WORK_DIR's disk has room"
    )
    assert done.lines["b"].status is ModelStatus.FAILED
    assert len(w.numerai.uploads) == 2  # only the first pass's

    lines, made = uploading(model("a"))
    done = upload(w.ctx, lines, made, ACCOUNT, tmp_path, free_bytes=lambda path: 0)
    assert done.lines["a"].error.endswith(
        "and 0.0 MiB is free; no model's worker left files outside its folder: something else "
        "filled the disk. Its predictions are archived (predictions/round-1200/a.csv) and the "
        "next run submits them once WORK_DIR's disk has room"
    )


def test_a_failed_write_of_the_upload_csv_fails_that_model_not_the_run(tmp_path: Path) -> None:
    w = world(account=ACCOUNT, lock=FakeLock(), work_dir=tmp_path)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    lines, made = uploading(model("a"))
    done = upload(w.ctx, lines, made, ACCOUNT, not_a_folder)
    assert done.lines["a"].status is ModelStatus.FAILED
    assert done.lines["a"].error.startswith("model 'a': not uploaded: its CSV could not be written")
    assert w.numerai.uploads == []
