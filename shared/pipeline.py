"""One run of the job: round → manifest → models → data → predictions → archive → upload → report.

The same function serves the timer (mode SCHEDULED, uploads), the HTTP test run
(mode TEST: every step but the upload) and `python -m shared run`. Whatever
happens, a report is written to the results container; predictions are archived
there before anything is uploaded, and the ledger records a submission only
once Numerai has confirmed it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from shared import benchmark_check
from shared.ensembles import RoundInputs, combined, neutralized
from shared.errors import DataVersionUnavailable, PostprocessError, StorageError, SubmitterError
from shared.manifest import DATA_VERSION_PATTERN, Manifest, ModelFormat, ModelSpec, parse_manifest
from shared.numerai_client import NumeraiClient, RoundInfo, version_key
from shared.predictions_csv import read_predictions
from shared.report import (
    Mode,
    ModelReport,
    ModelStatus,
    RunReport,
    RunStatus,
    SubmissionState,
    utc_now,
)
from shared.report_page import refresh_report_page
from shared.round_data import FetcherFor, run_fetchers
from shared.run_folder import remove_stale_folders, run_folder
from shared.run_lock import LockLost, RunLock, RunLocked
from shared.scaleout.fanout import fan_out
from shared.settings import Execution, Settings, load_settings
from shared.storage import (
    PREDICTIONS,
    TEST_PREDICTIONS,
    ModelStore,
    ResultsStore,
    blob_service_client,
)
from shared.submitter import SubmissionUnknown, Submitter
from shared.telemetry import configure_telemetry, record_run
from shared.window import check_listed, duration, missed_reason, staking_closed_for
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import run_workers

log = logging.getLogger(__name__)

class RunDeadlinePassed(SubmitterError):
    """The run is out of time (RUN_DEADLINE_SECONDS); what it made is archived for the next run."""


# Stands for a model file's ETag in an ensemble's archive metadata: an ensemble has no file.
ENSEMBLE_ETAG = "ensemble"
# Short, and renewed while the run works: a killed run frees the lock this soon.
LOCK_LEASE_SECONDS = 15
# A run that finds the lock held waits out one lease (and a little) before giving up,
# so that a run started just after a crashed one still runs the round.
LOCK_WAIT_SECONDS = LOCK_LEASE_SECONDS + 5


@dataclass
class RunContext:
    """What the steps of one run share (a queue task's steps too: see shared.scaleout.task)."""

    settings: Settings
    mode: Mode
    report: RunReport
    numerai: NumeraiClient
    models: ModelStore
    results: ResultsStore
    ends_at: float = float("inf")  # time.monotonic() at the run's deadline (RUN_DEADLINE_SECONDS)
    lock: RunLock | None = None  # scheduled runs only
    round: RoundInfo | None = None  # once the run has looked it up
    late_by: timedelta | None = None  # set when SUBMIT_LATE uploads after the staking close
    entries: dict[str, ModelSpec] = field(default_factory=dict)  # the manifest's (or run plan's), by name

    def data_version(self, spec: ModelSpec) -> str:
        """The data version an entry predicts from: its own, or the run's (NUMERAI_DATA_VERSION)."""
        return spec.data_version or self.settings.data_version

    def check_deadline(self, before: str) -> None:
        """Raise RunDeadlinePassed if the run's deadline has passed."""
        if time.monotonic() > self.ends_at:
            raise RunDeadlinePassed(
                f"the run reached its deadline (RUN_DEADLINE_SECONDS={self.settings.run_deadline_seconds:g}) "
                f"before {before}")

    def confirm_lock(self) -> None:
        """Raise LockLost if this run may no longer upload (a test run holds no lock, and uploads nothing)."""
        if self.lock is not None:
            self.lock.confirm()

    def member_predictions(self, name: str) -> str | None:
        """An ensemble member's predictions archived in this round (by this run's mode, or submitted), or None."""
        assert self.report.round_number is not None
        folders = [TEST_PREDICTIONS, PREDICTIONS] if self.mode is Mode.TEST else [PREDICTIONS]
        for folder in folders:
            csv = self.results.read_predictions(self.report.round_number, name, folder)
            if csv is not None:
                return csv
        return None

    def submitter(self) -> Submitter:
        """The exactly-once submissions of this run's round."""
        assert self.report.round_number is not None  # set before any model is looked at
        return Submitter(self.numerai, self.results, self.report.round_number, self.report.run_id,
                         self.confirm_lock, self.report.trigger_id)


def run_job(
    mode: Mode,
    model_names: list[str] | None = None,
    *,
    past_due: bool = False,
    environ: Mapping[str, str] | None = None,
    trigger_id: str | None = None,
) -> RunReport:
    """Run the job once and return its report (also saved in the results container).

    `trigger_id` is Numerai's, when its webhook started the run: every submission passes it on.
    Never raises for a failure of the run itself: the report says what failed.
    """
    started = time.monotonic()
    report = RunReport(run_id=_new_run_id(mode), mode=mode, started_at=utc_now(), past_due=past_due,
                       trigger_id=trigger_id)
    results: ResultsStore | None = None
    if past_due:
        log.warning("the timer is past due; running now")
    try:
        settings = load_settings(environ)
        report.data_version = settings.data_version
        blobs = service(settings)
        results = ResultsStore(blobs, settings.results_container)
        # Once a report can be saved: a malformed telemetry setting then fails the run with a report.
        configure_telemetry(environ)
        run = RunContext(settings, mode, report, NumeraiClient(settings),
                         ModelStore(blobs, settings.models_container, settings.work_dir / "model-cache"), results,
                         ends_at=started + settings.run_deadline_seconds)
        _locked_steps(run, model_names)
    except SubmitterError as exc:
        report.fail(str(exc))
    except Exception as exc:  # a bug or a library surprise: still reported, never lost
        log.exception("run %s stopped by an unexpected error", report.run_id)
        report.fail(_unexpected(exc))
    else:
        if report.fanned_out:
            # Saved by fan_out; whichever task finishes last completes the report and records the run.
            log.info("run %s: %d models are queue tasks; GET /api/runs/%s follows them", report.run_id,
                     sum(m.status is ModelStatus.PENDING for m in report.models), report.run_id)
            return report
        report.finish()
    report.redact()
    _save(report, results)
    if results is not None and report.status is not RunStatus.NOTHING_TO_DO:
        refresh_report_page(results)  # a firing with nothing to do changes nothing on it
    record_run(report, time.monotonic() - started)
    return report


def report_unexpected(mode: Mode, exc: Exception, environ: Mapping[str, str] | None = None) -> RunReport:
    """A failed report for an error raised outside `run_job`, saved in the results container like any run's.

    Never raises: should the settings or storage fail too, the report says so and is only returned and logged.
    """
    report = RunReport(run_id=_new_run_id(mode), mode=mode, started_at=utc_now())
    report.fail(_unexpected(exc))
    results: ResultsStore | None = None
    try:
        settings = load_settings(environ)
        results = ResultsStore(service(settings), settings.results_container)
    except Exception as error:  # the report is all that is left to give; it must not be lost
        log.exception("the report of run %s cannot be saved", report.run_id)
        report.fail(f"{report.reason}; the report could not be saved: {_unexpected(error)}")
    report.redact()
    _save(report, results)
    return report


def _unexpected(exc: Exception) -> str:
    return f"unexpected error: {type(exc).__name__}: {str(exc)[:300]}"


def service(settings: Settings) -> BlobServiceClient:
    """The Blob service client the settings describe."""
    return blob_service_client(
        connection_string=settings.storage_connection_string,
        account_url=settings.storage_account_url,
        managed_identity_client_id=settings.managed_identity_client_id,
        timeout_seconds=settings.storage_timeout_seconds,
    )


def _locked_steps(run: RunContext, model_names: list[str] | None) -> None:
    """Scheduled runs take the run lock; test runs upload nothing and need none."""
    if run.mode is Mode.TEST:
        _steps(run, model_names)
        return
    try:
        with run.results.run_lock("scheduled-run", LOCK_LEASE_SECONDS, LOCK_WAIT_SECONDS) as lock:
            run.lock = lock
            _steps(run, model_names)
    except RunLocked as exc:
        log.warning("%s", exc)
        run.report.status = RunStatus.LOCKED
        run.report.reason = str(exc)


def _steps(run: RunContext, model_names: list[str] | None) -> None:
    remove_stale_folders(run.settings.work_dir / "rounds")
    round_ = run.numerai.current_round()
    if not _round_allows(run, round_):
        return
    manifest = _manifest(run, model_names)
    run.entries = {spec.name: spec for spec in manifest.models}
    run.report.models = [ModelReport(spec.name) for spec in manifest.in_order()]
    account = run.numerai.model_ids()
    _check_account(run, manifest, account)
    if run.mode is Mode.TEST:
        note_submitted(run)
    elif not run.settings.force_resubmit:
        skip_submitted(run, account)
    if run.report.after_window:
        assert run.round is not None
        check_listed(run.report, run.numerai, account, run.round)
    pending = _needed(run, manifest)
    if pending:
        _work_on(run, pending, account)
    if run.report.after_window:
        run.results.mark_window_checked(run.report.round_number, run.report.run_id)


def _work_on(run: RunContext, pending: list[ModelSpec], account: dict[str, str]) -> None:
    """Predict the pending entries on this instance, or fan them out as queue tasks."""
    note_newer_versions(run, pending)
    if run.settings.model_execution is Execution.QUEUE:
        fan_out(run.report, run.settings, run.results, pending, account, run.ends_at)
        return
    with run_folder(run.settings.work_dir / "rounds", run.report.run_id) as folder:
        process_models(run, pending, account, folder, run_fetchers(run.numerai, folder, run.report.round_number))


def _needed(run: RunContext, manifest: Manifest) -> list[ModelSpec]:
    """The pending entries to work on: those to submit, and what their ensembles need.

    An entry with `submit: false` that no pending ensemble needs is skipped.
    """
    pending = [s for s in manifest.in_order() if run.report.model(s.name).status is ModelStatus.PENDING]
    wanted = {s.name for s in pending if s.submit}
    for spec in reversed(pending):  # ensembles come after their members: walk down from them
        if spec.name in wanted and spec.members:
            wanted.update(spec.members)
    for spec in pending:
        if spec.name not in wanted:
            line = run.report.model(spec.name)
            line.status = ModelStatus.SKIPPED
            line.error = f"model '{spec.name}': submit is false and no ensemble to submit this run needs it"
    return [s for s in pending if s.name in wanted]


def process_models(run: RunContext, pending: list[ModelSpec], account: dict[str, str], work_dir: Path,
                   data: FetcherFor) -> None:
    """Predict (or reuse), post-process, check, archive and, in a scheduled run, upload `pending`.

    Their lines say how it went. A local run passes every pending entry (members
    before their ensembles); a queue task passes its one. `data` gives each data
    version's files. A model predicts from, and is neutralized against, its own
    version's files; ensembles and the benchmark check read the run's version's.
    """
    versions = {run.settings.data_version, *(run.data_version(s) for s in pending if not s.is_ensemble)}
    inputs_of = {version: RoundInputs(data(version), run.settings.benchmark_model) for version in versions}
    inputs = inputs_of[run.settings.data_version]
    for spec in pending:
        if not spec.is_ensemble:
            run.report.model(spec.name).data_version = run.data_version(spec)
    made = {p.spec.name: p for p in _reuse_or_predict(run, [s for s in pending if not s.is_ensemble],
                                                      work_dir, data)}
    for prediction in made.values():
        _neutralize(run, prediction, inputs_of[run.data_version(prediction.spec)])
    for spec in pending:
        if spec.is_ensemble:
            made[spec.name] = _ensemble(run, spec, made, inputs)
    predictions = list(made.values())
    _archive(run, predictions, inputs)
    if run.mode is Mode.SCHEDULED and _round_still_current(run):
        _upload(run, predictions, account, work_dir)


def _round_allows(run: RunContext, round_: RoundInfo | None) -> bool:
    report = run.report
    if round_ is None:
        report.status = RunStatus.NOTHING_TO_DO
        report.reason = "Numerai reports no current round"
        return False
    report.round_number = round_.number
    report.round_open_time = round_.open_time.isoformat()
    report.round_close_time = round_.close_time.isoformat()
    run.round = round_
    if round_.is_open():
        return True
    closed = f"round {round_.number} is not open for submissions (window {report.round_open_time} to {report.round_close_time})"
    if run.mode is Mode.TEST:
        # A test run exists to prove the next run will work: it carries on with the latest data.
        report.reason = f"{closed}; the test run used its data"
        return True
    late = staking_closed_for(round_)
    checked_by = None if late is None else run.results.window_checked_by(round_.number)
    if late is None or checked_by is not None:
        report.status = RunStatus.NOTHING_TO_DO
        done = f"; run {checked_by} already checked what Numerai lists for it" if checked_by else ""
        report.reason = f"{closed}{done}; nothing was downloaded or uploaded"
        return False
    # The first scheduled run after the close: it checks, archives, and uploads only if SUBMIT_LATE.
    report.after_window = True
    report.reason = (f"round {round_.number} closed for staking {duration(late)} ago; "
                     + ("late submissions are scored but not staked (SUBMIT_LATE=true)" if run.settings.submit_late
                        else "what was not submitted in the window is archived, not uploaded (SUBMIT_LATE=false)"))
    return True


def _round_still_current(run: RunContext) -> bool:
    """Check the round again before uploading: predictions belong to the round they were made for,
    and after its staking close only SUBMIT_LATE uploads them."""
    round_ = run.numerai.current_round()
    number = run.report.round_number
    if round_ is None or round_.number != number:
        now = "no round" if round_ is None else f"round {round_.number}"
        for line in run.report.models:
            if line.status is ModelStatus.PENDING:
                line.fail(f"model '{line.name}': round {number} ended during the run ({now} is current); "
                          "its predictions are archived but were not uploaded")
        return False
    late = staking_closed_for(round_)
    if late is None:
        return True
    if run.settings.submit_late:
        # Numerai still scores a late submission; it just cannot be staked.
        run.late_by = late
        if not run.report.after_window:
            run.report.reason = (f"round {number} closed for staking during the run; "
                                 "the submissions are late: scored, but not staked")
        return True
    for line in run.report.models:
        if line.status is ModelStatus.PENDING:
            line.miss(missed_reason(line.name, round_, late, line.predictions_blob))
    return False


def _manifest(run: RunContext, model_names: list[str] | None) -> Manifest:
    source = f"{run.settings.models_container}/{run.settings.manifest_blob}"
    return parse_manifest(run.models.read_text(run.settings.manifest_blob), source).select(model_names)


def _check_account(run: RunContext, manifest: Manifest, account: dict[str, str]) -> None:
    """Every entry to submit must be a model of the account; `submit: false` ones need not be."""
    for spec in manifest.models:
        line = run.report.model(spec.name)
        if spec.submit and spec.name not in account:
            line.fail(
                f"model '{line.name}' is not a Classic model of this Numerai account; "
                f"the account has: {', '.join(sorted(account)) or 'no models'}"
            )


def skip_submitted(run: RunContext, account: dict[str, str]) -> None:
    """Skip the models submitted for this round, including by a run that stopped before recording it."""
    submitter = run.submitter()
    for line in run.report.models:
        if line.status is not ModelStatus.PENDING or line.name not in account:  # not in it: submit is false
            continue
        try:
            submission_id = submitter.existing(line.name, account[line.name])
        except SubmissionUnknown as exc:
            line.fail(str(exc))
            line.submission = SubmissionState.UNKNOWN
            continue
        if submission_id is not None:
            line.status = ModelStatus.ALREADY_SUBMITTED
            line.submission_id = submission_id
            line.submission = SubmissionState.EXISTS


def note_submitted(run: RunContext) -> None:
    """A test run submits nothing, but its report still says which models the ledger has for the round."""
    for line in run.report.models:
        record = run.results.submission_for(run.report.round_number, line.name)
        if record is not None:
            line.submission_id = record.submission_id
            line.submission = SubmissionState.EXISTS


@dataclass
class _Prediction:
    """A model's predictions for this run, made now or taken from the archive.

    `csv` is the one text that is both archived and uploaded, byte for byte.
    """

    spec: ModelSpec
    outcome: ModelOutcome
    model_etag: str
    csv: str | None
    from_archive: bool = False


def _reuse_or_predict(run: RunContext, pending: list[ModelSpec], work_dir: Path, data: FetcherFor) -> list[_Prediction]:
    """Predict the pending models, except those a killed or failed run already archived."""
    reused: list[_Prediction] = []
    to_predict: list[tuple[ModelSpec, str]] = []
    for spec in pending:
        try:
            etag = run.models.etag(spec.file)
            archived = _reusable_archive(run, spec, etag)
        except StorageError as exc:
            run.report.model(spec.name).fail(f"model '{spec.name}': {exc}")
            continue
        if archived is not None:
            reused.append(archived)
        else:
            to_predict.append((spec, etag))
    return reused + _predict(run, to_predict, work_dir, data)


def _reusable_archive(run: RunContext, spec: ModelSpec, etag: str) -> _Prediction | None:
    """The archived predictions of this round, if a scheduled run made them from this very model file."""
    if run.mode is Mode.TEST:
        return None
    archived = run.results.archived_predictions(run.report.round_number, spec.name)
    if archived is None:
        return None
    if any(archived.metadata.get(key) != value for key, value in _made_from(run, spec, etag).items()):
        return None
    log.info("model %s: reusing the predictions archived for round %d", spec.name, run.report.round_number)
    rows = archived.csv.count("\n") - 1  # a header line, then one line per id
    return _Prediction(spec, ModelOutcome(name=spec.name, ok=True, rows=rows), etag, archived.csv, from_archive=True)


def _predict(run: RunContext, pending: list[tuple[ModelSpec, str]], work_dir: Path, data: FetcherFor) -> list[_Prediction]:
    # fetch() reads the ETag again. Should the file change in between, the archive
    # records the older ETag and a later run predicts again: the safe side.
    files = []
    for spec, etag in pending:
        try:
            files.append((spec, run.models.fetch(spec.file), etag))
        except StorageError as exc:
            run.report.model(spec.name).fail(f"model '{spec.name}': {exc}")
    if not files:
        return []
    run.check_deadline("downloading the round's data")
    requests, ready = _requests(run, files, work_dir, data)
    if not requests:
        return []
    outcomes = run_workers(requests, run.settings.worker_limits(run.ends_at), run.settings.max_parallel_models)
    return [_Prediction(spec, outcome, etag, outcome.csv)
            for (spec, _, etag), outcome in zip(ready, outcomes, strict=True)]


def _requests(run: RunContext, files: list[tuple[ModelSpec, Path, str]], work_dir: Path, data: FetcherFor
              ) -> tuple[list[WorkRequest], list[tuple[ModelSpec, Path, str]]]:
    """The workers' requests, each with its model's data version's files, and the (spec, file, etag) they are for.

    A version Numerai lacks fails its models. So does a failed download of a version, unless it is the
    run's own, which every step reads, or the only one (then a queue task is retried): the run fails.
    """
    by_version: dict[str, list[tuple[ModelSpec, Path, str]]] = {}
    for entry in files:
        by_version.setdefault(run.data_version(entry[0]), []).append(entry)
    requests, ready = [], []
    for version, group in by_version.items():
        try:
            round_files = data(version).files(any(spec.format is ModelFormat.NUMERAI_PICKLE for spec, _, _ in group))
        except SubmitterError as exc:
            if not isinstance(exc, DataVersionUnavailable) and (
                    version == run.settings.data_version or len(by_version) == 1):
                raise
            for spec, _, _ in group:
                run.report.model(spec.name).fail(f"model '{spec.name}': {exc}")
            continue
        requests += [round_files.request(spec, path, work_dir / "workers" / spec.name, run.settings.batch_rows)
                     for spec, path, _ in group]
        ready += group
    return requests, ready


def _neutralize(run: RunContext, prediction: _Prediction, inputs: RoundInputs) -> None:
    """Neutralize a model's new predictions as its entry asks; archived ones were neutralized when made."""
    spec = prediction.spec
    if spec.neutralize is None or prediction.from_archive or not prediction.outcome.ok or prediction.csv is None:
        return
    try:
        prediction.csv = neutralized(spec, prediction.csv, inputs)
    except SubmitterError as exc:
        # The raw predictions stay, archived as rejected: nothing computed is lost.
        prediction.outcome.ok = False
        prediction.outcome.error = f"model '{spec.name}': neutralization failed: {exc}"


def _ensemble(run: RunContext, spec: ModelSpec, made: dict[str, _Prediction], inputs: RoundInputs) -> _Prediction:
    """An ensemble's predictions from its members': made in this run, or archived in this round."""
    outcome = ModelOutcome(name=spec.name)
    try:
        members = {name: _member_csv(run, spec, name, made) for name in spec.members or {}}
        try:
            csv = combined(spec, members)
        except PostprocessError as exc:
            raise PostprocessError(f"{exc}{_mixed_versions(run, spec)}") from None
        if spec.neutralize is not None:
            csv = neutralized(spec, csv, inputs)
        # Worker-side rules, here only for ensembles: numerai-tools loads scipy, kept out of the run otherwise.
        from shared.worker.submission import validate_submission

        validate_submission(spec, read_predictions(csv).reset_index(), inputs.live_ids)
    except SubmitterError as exc:
        outcome.error = str(exc)
        return _Prediction(spec, outcome, ENSEMBLE_ETAG, None)
    outcome.ok, outcome.rows = True, csv.count("\n") - 1
    return _Prediction(spec, outcome, ENSEMBLE_ETAG, csv)


def _mixed_versions(run: RunContext, ensemble: ModelSpec) -> str:
    """Words to add to an ensemble's error when its members predict from different data versions."""
    versions = {m: run.data_version(run.entries[m]) for m in ensemble.members or {}
                if m in run.entries and not run.entries[m].is_ensemble}
    if len(set(versions.values())) < 2:
        return ""
    used = ", ".join(f"'{m}' {v}" for m, v in versions.items())
    return (f"; its members use different data versions ({used}), which an ensemble allows only when "
            "they predict the same live ids")


def _member_csv(run: RunContext, ensemble: ModelSpec, member: str, made: dict[str, _Prediction]) -> str:
    """A member's predictions for the round; PostprocessError naming the member if it has none."""
    if member in made:
        prediction = made[member]
        if not prediction.outcome.ok or prediction.csv is None:
            raise PostprocessError(f"ensemble '{ensemble.name}': member '{member}' failed, so the ensemble "
                                   "was not made")
        return prediction.csv
    line = run.report.model(member) if any(m.name == member for m in run.report.models) else None
    if line is not None and line.status is ModelStatus.FAILED:
        raise PostprocessError(f"ensemble '{ensemble.name}': member '{member}' failed, so the ensemble was not made")
    csv = run.member_predictions(member)
    if csv is None:
        raise PostprocessError(f"ensemble '{ensemble.name}': member '{member}' has no predictions for round "
                               f"{run.report.round_number}")
    return csv


def _archive(run: RunContext, predictions: list[_Prediction], inputs: RoundInputs) -> None:
    """Check and keep every prediction made, valid or not, before anything is uploaded."""
    for prediction in predictions:
        spec, outcome = prediction.spec, prediction.outcome
        line = run.report.model(spec.name)
        line.rows = outcome.rows
        line.seconds = round(outcome.load_seconds + outcome.predict_seconds, 3)
        line.peak_memory_mb = outcome.peak_memory_mb
        line.warnings = list(outcome.warnings)
        line.from_archive = prediction.from_archive
        passed = True
        if outcome.ok and spec.submit and prediction.csv is not None:
            passed = _benchmark_check(run, spec, line, prediction.csv, inputs)
        if prediction.csv is not None and not prediction.from_archive:
            try:
                line.predictions_blob = _write_archive(run, prediction, line.benchmark_corr if passed else None)
            except StorageError as exc:
                line.fail(f"model '{spec.name}': predictions could not be archived, so they were not uploaded: {exc}")
                continue
        elif prediction.from_archive:
            line.predictions_blob = f"{PREDICTIONS}/round-{run.report.round_number}/{spec.name}.csv"
        if not outcome.ok:
            line.fail(outcome.error or f"model '{spec.name}' failed")
        elif not passed:
            continue  # held back by the gate; the line says why
        elif not spec.submit:
            line.status = ModelStatus.PREDICTED
        elif run.mode is Mode.TEST:
            line.status = ModelStatus.VALIDATED


def _benchmark_check(run: RunContext, spec: ModelSpec, line: ModelReport, csv: str, inputs: RoundInputs) -> bool:
    assert run.report.round_number is not None
    try:
        return benchmark_check.check(spec, line, csv, inputs.benchmark, run.results, run.report.round_number)
    except SubmitterError as exc:  # the round's data could not be had: the check says so, and gates hold back
        return benchmark_check.check(spec, line, csv, benchmark_check.Benchmark(None, str(exc)), run.results,
                                     run.report.round_number)


def _write_archive(run: RunContext, prediction: _Prediction, benchmark_corr: float | None) -> str:
    spec, outcome = prediction.spec, prediction.outcome
    name = spec.name if outcome.ok else f"{spec.name}.rejected"
    folder = TEST_PREDICTIONS if run.mode is Mode.TEST else PREDICTIONS
    metadata = {**_made_from(run, spec, prediction.model_etag), "run_id": run.report.run_id}
    if benchmark_corr is not None:  # a later round's check compares with it; a gated figure is left out
        metadata["benchmark_corr"] = f"{benchmark_corr:.4f}"
    return run.results.write_predictions(run.report.round_number, name, prediction.csv, folder, metadata)


def _made_from(run: RunContext, spec: ModelSpec, etag: str) -> dict[str, str]:
    """Everything that changes a model's predictions in a round: a later run reuses them only if all match."""
    return {"model_etag": etag, "data_version": run.data_version(spec), "entry_digest": spec.digest()}


def note_newer_versions(run: RunContext, pending: list[ModelSpec]) -> None:
    """Note on the report, once per run, when Numerai lists a newer data version than models use.

    Not an error: a model keeps the version it was trained on. A failed look-up is only logged.
    """
    assert run.report.round_number is not None
    used: dict[str, list[str]] = {}
    for spec in pending:
        if not spec.is_ensemble:
            used.setdefault(run.data_version(spec), []).append(spec.name)
    try:
        listed = run.numerai.data_versions(run.report.round_number)
    except SubmitterError as exc:
        log.warning("the data versions Numerai lists could not be had: %s", exc)
        return
    if not listed:
        return
    newest = listed[-1]
    older = sorted((v for v in used if re.fullmatch(DATA_VERSION_PATTERN, v) and version_key(v) < version_key(newest)),
                   key=version_key)
    if older:
        models = "; ".join(f"{v}: {', '.join(used[v])}" for v in older)
        run.report.notes.append(
            f"Numerai lists data version {newest}, newer than some models use ({models}); a model keeps the "
            "version it was trained on: retrain it on the new one, then set its data_version")


def _upload(run: RunContext, predictions: list[_Prediction], account: dict[str, str], work_dir: Path) -> None:
    submitter = run.submitter()
    for prediction in predictions:
        spec = prediction.spec
        line = run.report.model(spec.name)
        if line.status is not ModelStatus.PENDING or prediction.csv is None or not spec.submit:
            continue
        csv_path = work_dir / f"{spec.name}_round{run.report.round_number}.csv"
        csv_path.write_text(prediction.csv)
        try:
            run.check_deadline(f"uploading model '{spec.name}'")
            result = submitter.submit(spec.name, account[spec.name], csv_path)
        except (LockLost, RunDeadlinePassed) as exc:
            run.report.fail(f"{exc}; the models not yet submitted are archived for the next run")
            return
        line.submission = result.state
        line.submission_id = result.submission_id
        line.warnings.extend(result.warnings)
        if result.error is not None:
            line.fail(result.error)
        else:
            line.status = ModelStatus.SUBMITTED
            if run.late_by is not None:
                line.warnings.append(f"model '{spec.name}': submitted {duration(run.late_by)} after the staking "
                                     "close (SUBMIT_LATE=true): scored, not staked")
            log.info("model %s: submission %s confirmed for round %d", spec.name, result.submission_id,
                     run.report.round_number)


def _save(report: RunReport, results: ResultsStore | None) -> None:
    """Write the report to the results container; log it whole either way."""
    if results is not None:
        try:
            report.report_blob = results.write_report(report.run_id, report.to_json())
        except StorageError as exc:
            reason = f"the report could not be saved: {exc}"
            report.fail(f"{report.reason}; {reason}" if report.reason else reason)
            report.redact()
    log.info("run report:\n%s", report.to_json())


def _new_run_id(mode: Mode) -> str:
    # Microseconds, so that run ids sort in the order the runs started.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{mode.value}-{uuid.uuid4().hex[:8]}"
