"""The end of every run, local or fanned out: the report saved, logged, shown on the page, and recorded."""

from __future__ import annotations

import logging

from shared.errors import StorageError
from shared.report import RunReport, RunStatus
from shared.report_page import refresh_report_page
from shared.storage import Results
from shared.telemetry import record_run

log = logging.getLogger(__name__)


def save_report(report: RunReport, results: Results | None) -> None:
    """Write the report to the results container (when it could be opened); a failed write fails the run."""
    if results is None:
        return
    try:
        report.report_blob = results.runs.write_report(report.run_id, report.to_json())
    except StorageError as exc:
        reason = f"the report could not be saved: {exc}"
        report.fail(f"{report.reason}; {reason}" if report.reason else reason)
        report.redact()


def publish(report: RunReport, results: Results | None, seconds: float) -> None:
    """Log the saved report whole, rewrite the report page, and emit the run's telemetry (what alerts read)."""
    log.info("run report:\n%s", report.to_json())
    if results is not None and report.status is not RunStatus.NOTHING_TO_DO:
        refresh_report_page(results)  # a firing with nothing to do changes nothing on it
    record_run(report, seconds)
