"""One queue task: one model of a fanned-out run, start to finish.

The same steps as a local run's, for one model: skip it if already submitted,
reuse or predict in a worker, validate, archive, upload exactly once. The
round's data is downloaded once per instance and round (RoundDataCache).

A failure that may pass (Numerai or storage unreachable, a lost lease, a bug)
is raised while the message has deliveries left, so that the host retries it
after host.json's visibilityTimeout; on the last delivery it is the model's
result instead, so the report gives the real reason rather than "poisoned".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from shared.errors import SettingsError, SubmitterError
from shared.jobs import raise_if_failed
from shared.numerai_client import NumeraiClient
from shared.pipeline import (
    LOCK_LEASE_SECONDS,
    LOCK_WAIT_SECONDS,
    RunContext,
    RunDeadlinePassed,
    note_submitted,
    process_models,
    run_job,
    service,
    skip_submitted,
)
from shared.report import Mode, ModelReport, ModelStatus, RunReport
from shared.round_data import RoundDataCache, RoundFetcher
from shared.run_folder import remove_stale_folders, run_folder
from shared.run_lock import RunLocked
from shared.scaleout.fanin import finish_if_complete, handle_deadline, keep_result
from shared.scaleout.messages import DEADLINE, RUN, TaskMessage, TaskQueue, max_dequeue_count
from shared.scaleout.plan import RunPlan
from shared.settings import Settings, load_settings
from shared.storage import ModelStore, ResultsStore
from shared.telemetry import configure_telemetry

log = logging.getLogger(__name__)


def run_task(body: bytes | str, dequeue_count: int, environ: Mapping[str, str] | None = None) -> None:
    """The queue trigger's work: one model of a run, the run's deadline, or a run Numerai's webhook started."""
    message = TaskMessage.from_body(body)
    if message.kind == RUN:
        _webhook_run(message, dequeue_count, environ)
        return
    context = _model_context(message, environ)
    if context is None:
        return
    settings, results, plan = context
    assert message.model is not None  # TaskMessage checks that a model task names its model
    if results.task_result(plan.run_id, message.model) is None:
        line = _run_model(settings, results, plan, message, dequeue_count)
        keep_result(results, plan, line)
    # Also when the result was kept by an earlier delivery that stopped before this step.
    finish_if_complete(results, plan, TaskQueue(settings))


def run_poisoned(body: bytes | str, dequeue_count: int, environ: Mapping[str, str] | None = None) -> None:
    """The poison queue's work: a task the host gave up on (its instance died each time) failed."""
    message = TaskMessage.from_body(body)
    if message.kind == RUN:
        log.error("webhook delivery %s (trigger %s) never finished its run; the schedule's next run "
                  "submits what it left", message.run_id, message.trigger_id)
        return
    context = _model_context(message, environ)
    if context is None:
        return
    settings, results, plan = context
    assert message.model is not None
    line = ModelReport(message.model)
    line.fail(f"model '{message.model}': its task was delivered {max_dequeue_count()} times (host.json "
              "maxDequeueCount) and never finished; the instance running it stopped each time: out of "
              "memory, or past functionTimeout? Its worker logs are in the function's logs for run "
              f"{plan.run_id}")
    keep_result(results, plan, line)
    finish_if_complete(results, plan, TaskQueue(settings))


def _webhook_run(message: TaskMessage, dequeue_count: int, environ: Mapping[str, str] | None) -> None:
    """The scheduled run Numerai's webhook asked for; raises RunFailed if it failed, as the timer does.

    Run on the first delivery only. The host delivers the message again after a failure, and a
    second run would submit nothing twice (the run lock and the ledger see to that) but would
    rerun every failed model and raise the alert again, up to maxDequeueCount times: like a
    timer's failed run, it is left to the next scheduled run.
    """
    if dequeue_count > 1:
        log.warning("webhook delivery %s (trigger %s) came back (delivery %d): its run already ran, or "
                    "its instance stopped; not run again", message.run_id, message.trigger_id, dequeue_count)
        return
    log.info("webhook delivery %s: the scheduled run for trigger %s (round %s)", message.run_id,
             message.trigger_id, message.round_number or "not named")
    raise_if_failed(run_job(Mode.SCHEDULED, environ=environ, trigger_id=message.trigger_id))


def _model_context(message: TaskMessage, environ: Mapping[str, str] | None
                   ) -> tuple[Settings, ResultsStore, RunPlan] | None:
    """What a model task needs; None when nothing is left to do (no plan, or the deadline, handled here)."""
    settings, results, plan = _context(message, environ)
    if plan is None:
        return None
    if message.kind == DEADLINE:
        handle_deadline(results, plan)
        return None
    return settings, results, plan


def _context(message: TaskMessage, environ: Mapping[str, str] | None
             ) -> tuple[Settings, ResultsStore, RunPlan | None]:
    settings = load_settings(environ)
    configure_telemetry(environ)
    results = ResultsStore(service(settings), settings.results_container)
    text = results.read_plan(message.run_id)
    if text is None:
        # The planner stopped before writing the plan: its report says so; the message has no use.
        log.error("run %s has no plan; its %s message is dropped", message.run_id, message.kind)
        return settings, results, None
    return settings, results, RunPlan.from_json(text)


def _run_model(settings: Settings, results: ResultsStore, plan: RunPlan, message: TaskMessage,
               dequeue_count: int) -> ModelReport:
    """The model's line after this delivery's work; raises to have the host retry what may pass."""
    name = message.model
    assert name is not None
    report = RunReport(run_id=plan.run_id, mode=plan.mode, started_at=plan.started_at, execution="queue",
                       round_number=plan.round_number, data_version=plan.data_version, models=[ModelReport(name)],
                       trigger_id=plan.trigger_id)
    line = report.model(name)
    if name not in plan.models or plan.spec(name).digest() != message.entry_digest:
        line.fail(f"model '{name}': the task's manifest entry is not the one its run planned; not run")
        return line
    # An ensemble's task sees how its members' tasks ended: a failed member fails it.
    for member in plan.spec(name).members or {}:
        result = results.task_result(plan.run_id, member)
        if result is not None:
            report.models.append(ModelReport.from_dict(json.loads(result)))
    run = RunContext(settings, plan.mode, report, NumeraiClient(settings),
                     ModelStore(service(settings), settings.models_container, settings.work_dir / "model-cache"),
                     results, ends_at=plan.ends_at(), entries={n: plan.spec(n) for n in plan.models})
    try:
        _locked_model(run, plan, name)
    except (RunDeadlinePassed, SettingsError) as exc:  # no retry can help
        line.fail(f"model '{name}': {exc}")
    except RunLocked as exc:
        line.fail(f"model '{name}': {exc}")
    except Exception as exc:
        if dequeue_count < max_dequeue_count():
            log.warning("run %s, model %s: delivery %d failed; the host retries it: %s",
                        plan.run_id, name, dequeue_count, exc)
            raise
        log.exception("run %s, model %s: the last delivery failed", plan.run_id, name)
        reason = str(exc) if isinstance(exc, SubmitterError) else f"unexpected error: {type(exc).__name__}: {exc}"
        line.fail(f"model '{name}': {reason} (delivery {dequeue_count}, the last)")
    if line.status is ModelStatus.PENDING:  # nothing decided it: a step stopped early without failing it
        line.fail(f"model '{name}': the task ended without a result")
    report.redact()
    return line


def _locked_model(run: RunContext, plan: RunPlan, name: str) -> None:
    """A scheduled task holds the model's lock for the round: two runs' tasks never submit it twice."""
    if run.mode is Mode.TEST:
        _model_steps(run, plan, name)
        return
    # Another run's task may be predicting this model: wait for as long as a model may take.
    wait = run.settings.model_time_limit_seconds + LOCK_WAIT_SECONDS
    with run.results.run_lock(f"round-{plan.round_number}-{name}", LOCK_LEASE_SECONDS, wait) as lock:
        run.lock = lock
        _model_steps(run, plan, name)


def _model_steps(run: RunContext, plan: RunPlan, name: str) -> None:
    if run.mode is Mode.TEST:
        note_submitted(run)
    elif not run.settings.force_resubmit:
        skip_submitted(run, plan.account)
    if run.report.model(name).status is not ModelStatus.PENDING:
        return
    rounds = run.settings.work_dir / "rounds"
    remove_stale_folders(rounds)
    cache = RoundDataCache(run.settings.work_dir / "round-data")

    def data(version: str) -> RoundFetcher:  # the model's own version, and the run's for its checks
        return cache.fetcher(run.numerai, plan.round_number, version)

    with run_folder(rounds, f"{plan.run_id}-{name}") as folder:
        process_models(run, [plan.spec(name)], plan.account, folder, data)
