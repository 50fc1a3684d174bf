"""The queue triggers: a model's task, the run's deadline, the webhook's queued run, and the poison queue."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from shared.errors import AppError, BadTask
from shared.executors.queue import task
from shared.executors.queue.messages import DEADLINE, RUN, TaskMessage, TaskQueue
from shared.report import RunStatus
from shared.settings import load_settings
from shared.storage import Results
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
            "webhook delivery %s never finished its run; the schedule's next run submits what it left",
            message.run_id,
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
            "webhook delivery %s came back (delivery %d): its run already ran, or its instance "
            "stopped; not run again",
            message.run_id,
            dequeue_count,
        )
        return
    record = _recorded_call(message)
    if record is None:
        return
    trigger_id = record.get("trigger_id") if isinstance(record.get("trigger_id"), str) else None
    log.info(
        "webhook delivery %s: the scheduled run of %s for trigger %s (round %s)",
        message.run_id,
        message.model or "every model",
        trigger_id,
        message.round_number,
    )
    report = scheduled_run(
        trigger_id=trigger_id,
        model=message.model,
        notes=[] if message.model else [OLD_URL_NOTE],
        trigger_round=message.round_number,
    )
    if report.status is RunStatus.LOCKED:
        _send_again(message)


def _recorded_call(message: TaskMessage) -> dict | None:
    """The webhook's record of the message's call (its trigger id); None, logged, when no call of
    Numerai's made the message: it is dropped, and runs nothing with a trigger id of its making."""
    text = Results.from_settings(load_settings()).runs.webhook_call(
        message.round_number, message.model
    )
    try:
        record = json.loads(text) if text is not None else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict) or record.get("delivery") != message.run_id:
        log.error(
            "webhook delivery %s (model %s, round %s) is not the call the webhook recorded for "
            "the model and round (a message no call of Numerai's made); dropped",
            message.run_id,
            message.model or "every model",
            message.round_number,
        )
        return None
    return record


def _send_again(message: TaskMessage) -> None:
    """A webhook run that found the run lock held: its message comes back later, up to LOCK_RETRIES times."""
    if message.waits >= LOCK_RETRIES:
        log.error(
            "webhook delivery %s found the run lock held %d times; not sent again: "
            "the schedule's next run submits what it left",
            message.run_id,
            message.waits,
        )
        return
    try:
        TaskQueue(load_settings()).send(
            replace(message, waits=message.waits + 1), LOCK_RETRY_SECONDS
        )
    except AppError as exc:
        log.error(
            "webhook delivery %s could not be sent again: %s; the schedule's next run "
            "submits what it left",
            message.run_id,
            exc,
        )
        return
    log.info(
        "webhook delivery %s: the run lock is held; sent again to run in %d s",
        message.run_id,
        LOCK_RETRY_SECONDS,
    )
