"""The queue triggers: a model's task, the run's deadline, the webhook's queued run, and the poison queue."""

from __future__ import annotations

import logging

from shared.errors import BadTask
from shared.executors.queue import task
from shared.executors.queue.messages import DEADLINE, RUN, TaskMessage
from shared.triggers.scheduled import scheduled_run

log = logging.getLogger(__name__)


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
        log.error("webhook delivery %s (trigger %s) never finished its run; the schedule's next run "
                  "submits what it left", message.run_id, message.trigger_id)
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
        log.warning("webhook delivery %s (trigger %s) came back (delivery %d): its run already ran, or "
                    "its instance stopped; not run again", message.run_id, message.trigger_id, dequeue_count)
        return
    log.info("webhook delivery %s: the scheduled run for trigger %s (round %s)", message.run_id,
             message.trigger_id, message.round_number or "not named")
    scheduled_run(trigger_id=message.trigger_id)
