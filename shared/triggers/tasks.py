"""The queue triggers: a model's task, the run's deadline, the webhook's queued run, and the poison queue."""

from __future__ import annotations

import logging
from dataclasses import replace

from shared.errors import AppError, BadTask
from shared.executors.queue import task
from shared.executors.queue.messages import DEADLINE, RUN, TaskMessage, TaskQueue
from shared.report import RunStatus
from shared.settings import load_settings
from shared.triggers.scheduled import scheduled_run

log = logging.getLogger(__name__)

# A webhook run that finds the run lock held (another model's call, or the timer, is running) is sent
# again this much later rather than dropped: Numerai calls every model's webhook at once, and in
# local mode one model's run holds the lock for as long as it predicts.
LOCK_RETRY_SECONDS = 60
# How often it is sent again: 40 minutes, past the hour-long staking window, then the timer takes over.
LOCK_RETRIES = 40
# The report's note for a call whose URL names no model.
OLD_URL_NOTE = (
    "started by a webhook URL that names no model (registered by an older version), so every "
    "model ran with this call's trigger id; run `python -m shared webhooks --set URL` to "
    "register one URL per model"
)


def model_task(body: bytes, dequeue_count: int) -> None:
    """One model of a fanned-out run (raises to have the host retry it), its deadline, or the scheduled run
    a webhook call queued (raises RunFailed if it failed)."""
    try:
        message = TaskMessage.from_body(body)
    except BadTask as exc:
        log.error("%s; dropped", exc)  # no retry can make it one of ours
        return
    if message.kind == RUN:
        _webhook_run(message, dequeue_count)
    elif message.kind == DEADLINE:
        task.run_deadline(message)
    else:
        task.run_model_task(message, dequeue_count)


def poisoned_task(body: bytes, dequeue_count: int) -> None:
    """The poison queue: record that a model's task never finished."""
    try:
        message = TaskMessage.from_body(body)
    except BadTask as exc:
        log.error("%s; dropped", exc)
        return
    if message.kind == RUN:
        log.error(
            "webhook delivery %s (trigger %s) never finished its run; the schedule's next run "
            "submits what it left",
            message.run_id,
            message.trigger_id,
        )
    elif message.kind == DEADLINE:
        task.run_deadline(message)
    else:
        task.run_poisoned(message)


def _webhook_run(message: TaskMessage, dequeue_count: int) -> None:
    """The scheduled run Numerai's webhook asked for; raises RunFailed if it failed, as the timer does.

    Run on the first delivery only. The host delivers the message again after a failure, and a
    second run would submit nothing twice (the run lock and the ledger see to that) but would
    rerun every failed model and raise the alert again, up to maxDequeueCount times: like a
    timer's failed run, it is left to the next scheduled run.
    """
    if dequeue_count > 1:
        log.warning(
            "webhook delivery %s (trigger %s) came back (delivery %d): its run already ran, or "
            "its instance stopped; not run again",
            message.run_id,
            message.trigger_id,
            dequeue_count,
        )
        return
    log.info(
        "webhook delivery %s: the scheduled run of %s for trigger %s (round %s)",
        message.run_id,
        message.model or "every model",
        message.trigger_id,
        message.round_number or "not named",
    )
    report = scheduled_run(
        trigger_id=message.trigger_id,
        model=message.model,
        notes=[] if message.model else [OLD_URL_NOTE],
    )
    if report.status is RunStatus.LOCKED:
        _send_again(message)


def _send_again(message: TaskMessage) -> None:
    """A webhook run that found the run lock held: its message comes back later, up to LOCK_RETRIES times."""
    if message.waits >= LOCK_RETRIES:
        log.error(
            "webhook delivery %s (trigger %s) found the run lock held %d times; not sent again: "
            "the schedule's next run submits what it left",
            message.run_id,
            message.trigger_id,
            message.waits,
        )
        return
    try:
        TaskQueue(load_settings()).send(
            replace(message, waits=message.waits + 1), LOCK_RETRY_SECONDS
        )
    except AppError as exc:
        log.error(
            "webhook delivery %s (trigger %s) could not be sent again: %s; the schedule's next run "
            "submits what it left",
            message.run_id,
            message.trigger_id,
            exc,
        )
        return
    log.info(
        "webhook delivery %s: the run lock is held; sent again to run in %d s",
        message.run_id,
        LOCK_RETRY_SECONDS,
    )
