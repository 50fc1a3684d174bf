"""One queue task: one model of a fanned-out run, start to finish, through the run's own model step.

The round's data is downloaded once per instance and round (RoundDataCache).
A failure that may pass (Numerai or storage unreachable, a lost lease, a bug)
is raised while the message has deliveries left, so that the host retries it
after host.json's visibilityTimeout; on the last delivery it is the model's
result instead, so the report gives the real reason rather than "poisoned".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from shared.errors import AppError, RunDeadlinePassed, RunLocked, SettingsError
from shared.executors.queue.fanin import finish_if_complete, handle_deadline, keep_result
from shared.executors.queue.messages import TaskMessage, TaskQueue, max_dequeue_count
from shared.executors.queue.plan import FanOutPlan
from shared.executors.run_folder import remove_stale_folders, run_folder
from shared.report import Mode, ModelReport, ModelStatus
from shared.settings import load_settings
from shared.steps.context import RoundContext, Services
from shared.steps.models import process_models
from shared.steps.round_data import RoundDataCache, RoundFetcher
from shared.steps.submitted import already_submitted
from shared.storage import Results
from shared.telemetry import configure_telemetry

log = logging.getLogger(__name__)

# Short, and renewed while the task works: a killed task frees its model's lock this soon.
LOCK_LEASE_SECONDS = 15
# Beyond the model's own time limit, how long a task waits for another run's task of the same model.
LOCK_WAIT_SECONDS = LOCK_LEASE_SECONDS + 5


def run_model_task(
    message: TaskMessage, dequeue_count: int, environ: Mapping[str, str] | None = None
) -> None:
    """A model's task: its result kept, and the run finished if this was the last one."""
    services, plan = _context(message, environ)
    if plan is None or not _planned(message, plan):
        return
    assert message.model is not None  # TaskMessage checks that a model task names its model
    if services.results.runs.task_result(plan.run_id, message.model) is None:
        line = _run_model(services, plan, message, dequeue_count)
        keep_result(services.results, plan, line)
    # Also when the result was kept by an earlier delivery that stopped before this step.
    finish_if_complete(services.results, plan, TaskQueue(services.settings), message.model)


def run_deadline(message: TaskMessage, environ: Mapping[str, str] | None = None) -> None:
    """The run's deadline message: every model still without a result failed; the run is finished."""
    services, plan = _context(message, environ)
    if plan is not None:
        handle_deadline(services.results, plan)


def run_poisoned(message: TaskMessage, environ: Mapping[str, str] | None = None) -> None:
    """A model's task the host gave up on (its instance died each time): the model failed."""
    services, plan = _context(message, environ)
    if plan is None or not _planned(message, plan):
        return
    assert message.model is not None
    line = ModelReport(message.model)
    line.fail(
        f"model '{message.model}': its task was delivered {max_dequeue_count()} times (host.json "
        "maxDequeueCount) and never finished; the instance running it stopped each time: out of "
        "memory, or past functionTimeout? Its worker logs are in the function's logs for run "
        f"{plan.run_id}"
    )
    keep_result(services.results, plan, line)
    finish_if_complete(services.results, plan, TaskQueue(services.settings), message.model)


def _context(
    message: TaskMessage, environ: Mapping[str, str] | None
) -> tuple[Services, FanOutPlan | None]:
    """The task's services, and its run's plan (None when the run wrote none: nothing is left to do)."""
    settings = load_settings(environ)
    configure_telemetry(environ)
    services = Services.connect(settings)
    text = services.results.runs.read_plan(message.run_id)
    if text is None:
        # The planner stopped before writing the plan: its report says so; the message has no use.
        log.error("run %s has no plan; its %s message is dropped", message.run_id, message.kind)
        return services, None
    return services, FanOutPlan.from_json(text)


def _planned(message: TaskMessage, plan: FanOutPlan) -> bool:
    """Whether the message is one the run sent: its model planned, under the entry the plan holds.

    Any other is dropped unrecorded: as the model's result it would stand (the first result is kept)
    and block the task the run did send.
    """
    name = message.model
    if name in plan.models and plan.spec(name).digest() == message.entry_digest:
        return True
    log.error(
        "run %s: a task for model %s whose manifest entry is not the one its run planned "
        "(not a message the run sent); dropped",
        plan.run_id,
        name,
    )
    return False


def _run_model(
    services: Services, plan: FanOutPlan, message: TaskMessage, dequeue_count: int
) -> ModelReport:
    """The model's line after this delivery's work; raises to have the host retry what may pass."""
    name = message.model
    assert name is not None
    ctx = RoundContext(
        services,
        plan.mode,
        plan.run_id,
        plan.round_number,
        ends_at=plan.ends_at(),
        trigger_id=plan.trigger_id,
        entries={n: plan.spec(n) for n in plan.models},
    )
    try:
        line = _locked_model(ctx, plan, name)
    except (RunDeadlinePassed, SettingsError, RunLocked) as exc:  # no retry can help
        line = ModelReport(name)
        line.fail(f"model '{name}': {exc}")
    except Exception as exc:
        if dequeue_count < max_dequeue_count():
            log.warning(
                "run %s, model %s: delivery %d failed; the host retries it: %s",
                plan.run_id,
                name,
                dequeue_count,
                exc,
            )
            raise
        log.exception("run %s, model %s: the last delivery failed", plan.run_id, name)
        reason = (
            str(exc)
            if isinstance(exc, AppError)
            else f"unexpected error: {type(exc).__name__}: {exc}"
        )
        line = ModelReport(name)
        line.fail(f"model '{name}': {reason} (delivery {dequeue_count}, the last)")
    if (
        line.status is ModelStatus.PENDING
    ):  # nothing decided it: a step stopped early without failing it
        line.fail(f"model '{name}': the task ended without a result")
    line.redact()
    return line


def _locked_model(ctx: RoundContext, plan: FanOutPlan, name: str) -> ModelReport:
    """A scheduled task holds the model's lock for the round: two runs' tasks never submit it twice."""
    if ctx.mode is Mode.TEST:
        return _model_steps(ctx, plan, name)
    # Another run's task may be predicting this model: wait for as long as a model may take.
    wait = ctx.settings.model_time_limit_seconds + LOCK_WAIT_SECONDS
    with ctx.results.locks.lock(
        f"round-{plan.round_number}-{name}", LOCK_LEASE_SECONDS, wait
    ) as lock:
        ctx.lock = lock
        return _model_steps(ctx, plan, name)


def _model_steps(ctx: RoundContext, plan: FanOutPlan, name: str) -> ModelReport:
    """The model step for one model, unless another run of the round submitted it meanwhile."""
    if ctx.mode is Mode.SCHEDULED and not ctx.settings.force_resubmit:
        decided = already_submitted(ctx, [name], plan.account)
        if name in decided:
            return decided[name]
    rounds = ctx.settings.work_dir / "rounds"
    remove_stale_folders(rounds)
    cache = RoundDataCache(ctx.settings.work_dir / "round-data")

    def data(version: str) -> RoundFetcher:  # the model's own version, and the run's for its checks
        return cache.fetcher(ctx.services.numerai, plan.round_number, version)

    with run_folder(rounds, f"{plan.run_id}-{name}") as folder:
        done = process_models(
            ctx,
            [plan.spec(name)],
            plan.account,
            folder,
            data,
            elsewhere=_members_results(ctx.results, plan, name),
        )
    line = done.lines[name]
    if done.stopped is not None and line.status is ModelStatus.PENDING:
        line.fail(f"not finished: {done.stopped}")
    return line


def _members_results(results: Results, plan: FanOutPlan, name: str) -> dict[str, ModelReport]:
    """How an ensemble's members ended, in planning or in their tasks: a failed member fails it."""
    found = {}
    for member in plan.spec(name).members or {}:
        result = results.runs.task_result(plan.run_id, member) if member in plan.models else None
        if result is not None:
            found[member] = ModelReport.from_dict(json.loads(result))
        elif member in plan.decided:
            found[member] = ModelReport.from_dict(plan.decided[member])
    return found
