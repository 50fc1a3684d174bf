"""One run of the job: round → manifest → the models' executor → report.

The same function serves the timer (mode SCHEDULED, uploads), the HTTP test run
(mode TEST: every step but the upload), Numerai's webhook and `python -m shared
run`. Whatever happens, a report is written to the results container;
predictions are archived there before anything is uploaded, and the ledger
records a submission only once Numerai has confirmed it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.errors import AppError, RunLocked
from shared.executors.base import Executor
from shared.report import Mode, RunReport, RunStatus, utc_now, worked_on
from shared.run.planning import ModelPlan, RoundDecision, decide_round, plan_models, read_manifest
from shared.settings import Settings, load_settings
from shared.steps.context import RoundContext, Services
from shared.steps.models import ModelResults
from shared.steps.publish import publish, save_report
from shared.steps.window import settled
from shared.storage import Results
from shared.storage.lock import RunLock
from shared.telemetry import configure_telemetry

log = logging.getLogger(__name__)

# Short, and renewed while the run works: a killed run frees the lock this soon.
LOCK_LEASE_SECONDS = 15
# A run that finds the lock held waits out one lease (and a little) before giving up,
# so that a run started just after a crashed one still runs the round.
LOCK_WAIT_SECONDS = LOCK_LEASE_SECONDS + 5

# The trigger layer's choice of executor, made once the run has read its settings (MODEL_EXECUTION).
ExecutorFor = Callable[[Settings], Executor]


def run_job(
    mode: Mode,
    executor_for: ExecutorFor,
    model_names: list[str] | None = None,
    *,
    past_due: bool = False,
    environ: Mapping[str, str] | None = None,
    trigger_id: str | None = None,
    submit_members: bool = True,
    notes: list[str] | None = None,
    trigger_round: int | None = None,
) -> RunReport:
    """Run the job once and return its report (also saved in the results container).

    `trigger_id` is Numerai's, when its webhook started the run: every submission passes it on.
    With `submit_members` False (a webhook call for one model), the members of a named ensemble
    are predicted but not submitted: each has its own call. `trigger_round` is the round the
    webhook call was for: in any other the run does nothing, as the trigger id is not that round's.
    `notes` go into the report as they are.
    Never raises for a failure of the run itself: the report says what failed. A run whose
    models went to queue tasks returns its report running; the last task finishes it.
    """
    started = time.monotonic()
    report = RunReport(
        run_id=_new_run_id(mode),
        mode=mode,
        started_at=utc_now(),
        past_due=past_due,
        trigger_id=trigger_id,
        notes=list(notes or []),
    )
    results: Results | None = None
    if past_due:
        log.warning("the timer is past due; running now")
    try:
        settings = load_settings(environ)
        report.data_version = settings.data_version
        services = Services.connect(settings)
        results = services.results
        # Once a report can be saved: a malformed telemetry setting then fails the run with a report.
        configure_telemetry(environ)
        selection = _Selection(model_names, submit_members, trigger_round)
        fanned_out = _locked_run(
            services,
            report,
            selection,
            executor_for(settings),
            started + settings.run_deadline_seconds,
        )
    except AppError as exc:
        report.fail(str(exc))
    except Exception as exc:  # a bug or a library surprise: still reported, never lost
        log.exception("run %s stopped by an unexpected error", report.run_id)
        report.fail(_unexpected(exc))
    else:
        if fanned_out:
            log.info(
                "run %s: its models are queue tasks; GET /api/runs/%s follows them",
                report.run_id,
                report.run_id,
            )
            return report
        report.finish()
    report.redact()
    save_report(report, results)
    publish(report, results, time.monotonic() - started)
    return report


def report_unexpected(
    mode: Mode, exc: Exception, environ: Mapping[str, str] | None = None
) -> RunReport:
    """A failed report for an error raised outside `run_job`, saved in the results container like any run's.

    Never raises: should the settings or storage fail too, the report says so and is only returned and logged.
    """
    report = RunReport(run_id=_new_run_id(mode), mode=mode, started_at=utc_now())
    report.fail(_unexpected(exc))
    results: Results | None = None
    try:
        results = Results.from_settings(load_settings(environ))
    except Exception as error:  # the report is all that is left to give; it must not be lost
        log.exception("the report of run %s cannot be saved", report.run_id)
        report.fail(f"{report.reason}; the report could not be saved: {_unexpected(error)}")
    report.redact()
    save_report(report, results)
    log.info("run report:\n%s", report.to_json())
    return report


@dataclass(frozen=True)
class _Selection:
    """The models a run was asked for (None: all), and whether their ensembles' members are submitted."""

    names: list[str] | None
    submit_members: bool = True
    trigger_round: int | None = None  # a webhook call's round: its trigger id is for no other


def _locked_run(
    services: Services, report: RunReport, selection: _Selection, executor: Executor, ends_at: float
) -> bool:
    """Scheduled runs take the run lock; test runs upload nothing and need none. True if fanned out."""
    if report.mode is Mode.TEST:
        return _run(services, report, selection, executor, ends_at, None)
    try:
        with services.results.locks.lock(
            "scheduled-run", LOCK_LEASE_SECONDS, LOCK_WAIT_SECONDS
        ) as lock:
            return _run(services, report, selection, executor, ends_at, lock)
    except RunLocked as exc:
        log.warning("%s", exc)
        report.status = RunStatus.LOCKED
        report.reason = str(exc)
        return False


def _run(
    services: Services,
    report: RunReport,
    selection: _Selection,
    executor: Executor,
    ends_at: float,
    lock: RunLock | None,
) -> bool:
    """Plan the run and hand its pending models to the executor; True if they went to queue tasks."""
    decision = decide_round(services, report.mode, services.numerai.current_round())
    _note_round(report, decision)
    if not decision.goes_on or decision.round is None:
        report.status = RunStatus.NOTHING_TO_DO
        return False
    if selection.trigger_round not in (None, decision.round.number):
        report.status = RunStatus.NOTHING_TO_DO
        report.reason = (
            f"Numerai's webhook call was for round {selection.trigger_round}, and round "
            f"{decision.round.number} is open: its trigger id is not this round's, so the call "
            "runs nothing; the schedule's runs submit this round"
        )
        return False
    ctx = RoundContext(
        services,
        report.mode,
        report.run_id,
        decision.round.number,
        ends_at,
        report.trigger_id,
        lock=lock,
    )
    manifest = read_manifest(services, selection.names, selection.submit_members)
    ctx.entries = {spec.name: spec for spec in manifest.models}
    account = services.numerai.model_ids()
    plan = plan_models(ctx, manifest, account, decision)
    report.models = list(plan.lines.values())
    report.notes.extend(plan.notes)
    done = executor.execute(ctx, plan.pending, account, report) if plan.pending else ModelResults()
    if done is None:
        return True  # fanned out: the task that finishes the report decides the window mark
    _assemble(report, plan, done, decision)
    if decision.after_window and settled(report.models, services.settings.submit_late):
        services.results.runs.mark_window_checked(ctx.round_number, report.run_id)
    return False


def _note_round(report: RunReport, decision: RoundDecision) -> None:
    """What the report says of the round, whether or not the run goes on with it."""
    report.reason = decision.reason
    report.after_window = decision.after_window
    if decision.round is not None:
        report.round_number = decision.round.number
        report.round_open_time = decision.round.open_time.isoformat()
        report.round_close_time = decision.round.close_time.isoformat()


def _assemble(
    report: RunReport, plan: ModelPlan, done: ModelResults, decision: RoundDecision
) -> None:
    """The report's lines: planning's, with each worked-on model's line from the executor in its place."""
    report.models = [
        worked_on(planned, done.lines[name]) if name in done.lines else planned
        for name, planned in plan.lines.items()
    ]
    if done.notes and not decision.after_window:
        report.reason = done.notes[-1]
    if done.stopped is not None:
        report.fail(done.stopped)


def _unexpected(exc: Exception) -> str:
    return f"unexpected error: {type(exc).__name__}: {str(exc)[:300]}"


def _new_run_id(mode: Mode) -> str:
    # Microseconds, so that run ids sort in the order the runs started.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{mode.value}-{uuid.uuid4().hex[:8]}"
