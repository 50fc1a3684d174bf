"""One run of the job: round → manifest → models → data → predictions → archive → upload → report.

The same function serves the timer (mode SCHEDULED, uploads), the HTTP test run
(mode TEST: every step but the upload) and `python -m shared run`. Whatever
happens, a report is written to the results container; predictions are archived
there before anything is uploaded, and the ledger records a submission only
once Numerai has confirmed it.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from shared.errors import StorageError, SubmitterError
from shared.live_data import LiveData, read_feature_sets
from shared.manifest import Manifest, ModelFormat, ModelSpec, parse_manifest
from shared.numerai_client import NumeraiClient, RoundInfo
from shared.predictor import ModelOutcome, predict_round
from shared.report import Mode, ModelReport, ModelStatus, RunReport, RunStatus, utc_now
from shared.settings import Settings, load_settings
from shared.storage import (
    PREDICTIONS,
    TEST_PREDICTIONS,
    ModelStore,
    ResultsStore,
    SubmissionRecord,
    blob_service_client,
)
from shared.telemetry import configure_telemetry, record_run

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What the steps of one run share."""

    settings: Settings
    mode: Mode
    report: RunReport
    numerai: NumeraiClient
    models: ModelStore
    results: ResultsStore


def run_job(
    mode: Mode,
    model_names: list[str] | None = None,
    *,
    past_due: bool = False,
    environ: Mapping[str, str] | None = None,
) -> RunReport:
    """Run the job once and return its report (also saved in the results container).

    Never raises for a failure of the run itself: the report says what failed.
    """
    started = time.monotonic()
    configure_telemetry(environ)
    report = RunReport(run_id=_new_run_id(mode), mode=mode, started_at=utc_now(), past_due=past_due)
    results: ResultsStore | None = None
    if past_due:
        log.warning("the timer is past due; running now")
    try:
        settings = load_settings(environ)
        report.data_version = settings.data_version
        service = blob_service_client(
            connection_string=settings.storage_connection_string,
            account_url=settings.storage_account_url,
            managed_identity_client_id=settings.managed_identity_client_id,
            timeout_seconds=settings.storage_timeout_seconds,
        )
        results = ResultsStore(service, settings.results_container)
        run = _Run(settings, mode, report, NumeraiClient(settings),
                   ModelStore(service, settings.models_container, settings.work_dir / "model-cache"), results)
        _steps(run, model_names)
    except SubmitterError as exc:
        report.fail(str(exc))
    except Exception as exc:  # a bug or a library surprise: still reported, never lost
        log.exception("run %s stopped by an unexpected error", report.run_id)
        report.fail(f"unexpected error: {type(exc).__name__}: {str(exc)[:300]}")
    else:
        report.finish()
    _save(report, results)
    record_run(report, time.monotonic() - started)
    return report


def _steps(run: _Run, model_names: list[str] | None) -> None:
    round_ = run.numerai.current_round()
    if not _round_allows(run, round_):
        return
    manifest = _manifest(run, model_names)
    run.report.models = [ModelReport(spec.name) for spec in manifest.models]
    account = run.numerai.model_ids()
    _check_account(run.report, account)
    if run.mode is Mode.SCHEDULED and not run.settings.force_resubmit:
        _skip_submitted(run)
    pending = [s for s in manifest.models if run.report.model(s.name).status is ModelStatus.PENDING]
    if not pending:
        return
    data_dir = run.settings.work_dir / "rounds" / run.report.run_id
    try:
        outcomes = _predict(run, pending, data_dir)
        _archive(run, outcomes)
        if run.mode is Mode.SCHEDULED:
            _upload(run, outcomes, account, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _round_allows(run: _Run, round_: RoundInfo | None) -> bool:
    report = run.report
    if round_ is None:
        report.status = RunStatus.NOTHING_TO_DO
        report.reason = "Numerai reports no current round"
        return False
    report.round_number = round_.number
    report.round_open_time = round_.open_time.isoformat()
    report.round_close_time = round_.close_time.isoformat()
    if round_.is_open():
        return True
    closed = f"round {round_.number} is not open for submissions (window {report.round_open_time} to {report.round_close_time})"
    if run.mode is Mode.TEST:
        # A test run exists to prove the next run will work: it carries on with the latest data.
        report.reason = f"{closed}; the test run used its data"
        return True
    report.status = RunStatus.NOTHING_TO_DO
    report.reason = f"{closed}; nothing was downloaded or uploaded"
    return False


def _manifest(run: _Run, model_names: list[str] | None) -> Manifest:
    source = f"{run.settings.models_container}/{run.settings.manifest_blob}"
    return parse_manifest(run.models.read_text(run.settings.manifest_blob), source).select(model_names)


def _check_account(report: RunReport, account: dict[str, str]) -> None:
    for line in report.models:
        if line.name not in account:
            line.fail(
                f"model '{line.name}' is not a Classic model of this Numerai account; "
                f"the account has: {', '.join(sorted(account)) or 'no models'}"
            )


def _skip_submitted(run: _Run) -> None:
    for line in run.report.models:
        if line.status is not ModelStatus.PENDING:
            continue
        record = run.results.submission_for(run.report.round_number, line.name)
        if record is not None:
            line.status = ModelStatus.ALREADY_SUBMITTED
            line.submission_id = record.submission_id


def _predict(run: _Run, pending: list[ModelSpec], data_dir: Path) -> list[tuple[ModelSpec, ModelOutcome]]:
    files = []
    for spec in pending:
        try:
            files.append((spec, run.models.fetch(spec.file)))
        except StorageError as exc:
            run.report.model(spec.name).fail(f"model '{spec.name}': {exc}")
    if not files:
        return []
    live, feature_sets, benchmark = _download(run, data_dir, any(s.format is ModelFormat.NUMERAI_PICKLE for s, _ in files))
    outcomes = predict_round(live, feature_sets, files, run.settings.batch_rows, benchmark_path=benchmark)
    return [(spec, outcome) for (spec, _), outcome in zip(files, outcomes)]


def _download(run: _Run, data_dir: Path, with_benchmarks: bool) -> tuple[LiveData, dict[str, list[str]], Path | None]:
    data_dir.mkdir(parents=True, exist_ok=False)
    round_number = run.report.round_number
    features = run.numerai.download("features.json", data_dir, round_number)
    live = run.numerai.download("live.parquet", data_dir, round_number)
    benchmark = run.numerai.download("live_benchmark_models.parquet", data_dir, round_number) if with_benchmarks else None
    return LiveData(live, run.settings.data_version), read_feature_sets(features), benchmark


def _archive(run: _Run, outcomes: list[tuple[ModelSpec, ModelOutcome]]) -> None:
    """Keep every prediction made, valid or not, before anything is uploaded."""
    for spec, outcome in outcomes:
        line = run.report.model(spec.name)
        line.rows = outcome.rows
        line.seconds = round(outcome.load_seconds + outcome.predict_seconds, 3)
        if outcome.submission is not None:
            name = spec.name if outcome.ok else f"{spec.name}.rejected"
            csv = outcome.submission.to_csv(index=False)
            folder = TEST_PREDICTIONS if run.mode is Mode.TEST else PREDICTIONS
            try:
                line.predictions_blob = run.results.write_predictions(run.report.round_number, name, csv, folder)
            except StorageError as exc:
                line.fail(f"model '{spec.name}': predictions could not be archived, so they were not uploaded: {exc}")
                continue
        if not outcome.ok:
            line.fail(outcome.error or f"model '{spec.name}' failed")
        elif run.mode is Mode.TEST:
            line.status = ModelStatus.VALIDATED


def _upload(run: _Run, outcomes: list[tuple[ModelSpec, ModelOutcome]], account: dict[str, str], data_dir: Path) -> None:
    for spec, outcome in outcomes:
        line = run.report.model(spec.name)
        if line.status is not ModelStatus.PENDING or outcome.submission is None:
            continue
        csv_path = data_dir / f"{spec.name}_round{run.report.round_number}.csv"
        outcome.submission.to_csv(csv_path, index=False)
        try:
            submission_id = run.numerai.submit(spec.name, account[spec.name], csv_path)
        except SubmitterError as exc:
            line.fail(str(exc))
            continue
        line.submission_id = submission_id
        try:
            run.results.record_submission(SubmissionRecord(
                round_number=run.report.round_number, model_name=spec.name, model_id=account[spec.name],
                submission_id=submission_id, submitted_at=utc_now(),
            ))
        except StorageError as exc:
            line.fail(f"model '{spec.name}': submitted as {submission_id}, but the ledger could not "
                      f"record it, so a later run may submit it again: {exc}")
            continue
        line.status = ModelStatus.SUBMITTED
        log.info("model %s: submission %s confirmed for round %d", spec.name, submission_id,
                 run.report.round_number)


def _save(report: RunReport, results: ResultsStore | None) -> None:
    """Write the report to the results container; log it whole either way."""
    if results is not None:
        try:
            report.report_blob = results.write_report(report.run_id, report.to_json())
        except StorageError as exc:
            reason = f"the report could not be saved: {exc}"
            report.fail(f"{report.reason}; {reason}" if report.reason else reason)
    log.info("run report:\n%s", report.to_json())


def _new_run_id(mode: Mode) -> str:
    # Microseconds, so that run ids sort in the order the runs started.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{mode.value}-{uuid.uuid4().hex[:8]}"
