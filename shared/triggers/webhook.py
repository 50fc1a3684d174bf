"""Numerai's webhook: a round opened; the scheduled run is queued and the call answered at once."""

from __future__ import annotations

import json
import logging
import re
import uuid

from shared.errors import AppError, BadRequest
from shared.triggers.answers import HttpAnswer, check_size, json_document, json_type

log = logging.getLogger(__name__)

# What a trigger id may be: Numerai's are opaque; this keeps anything else out of reports and queries.
TRIGGER_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"


def numerai_webhook(body: bytes) -> HttpAnswer:
    """Numerai's call when a round opens: queue the scheduled run and answer 202 at once.

    Numerai does not wait for a run, and Azure cuts an HTTP request at 230 s, so the run is a
    message on the task queue (kind "run"), which the queue trigger runs. The body is read as
    numerai-cli's triggers read it: a JSON object whose `triggerId` (numerai-cli's GCP workflow
    reads `trigger_id`) is passed on to create_submission; without one, the run has no trigger
    id. 400 for a body that is not such an object, and nothing is queued; 500 if the queue
    cannot be written.
    """
    # The queue's client loads only where it is used.
    from shared.executors.queue.messages import RUN, TaskMessage, TaskQueue
    from shared.settings import load_settings

    try:
        trigger_id, round_number = _webhook_fields(body)
        delivery = f"webhook-{uuid.uuid4().hex[:12]}"
        TaskQueue(load_settings()).send(TaskMessage(RUN, delivery, round_number, trigger_id=trigger_id))
    except BadRequest as exc:
        log.warning("numerai-webhook: %s; nothing was queued", exc)
        return HttpAnswer(400, json.dumps({"error": str(exc)}))
    except AppError as exc:  # a setting at fault, or the queue unreachable: the message says which
        log.error("numerai-webhook: the run was not queued: %s", exc)
        return HttpAnswer(500, json.dumps({"error": f"the run was not queued: {exc}"}))
    log.info("numerai-webhook: queued the scheduled run as %s (trigger %s, round %s)", delivery, trigger_id,
             round_number or "not named")
    return HttpAnswer(202, json.dumps({"queued": RUN, "delivery": delivery, "trigger_id": trigger_id}))


def _webhook_fields(body: bytes) -> tuple[str | None, int]:
    """(trigger id or None, round number or 0) from the webhook call's body."""
    check_size(body)
    if not body.strip():
        return None, 0
    document = json_document(body, '{"triggerId": "...", "roundNumber": 1234}')
    trigger = document.get("triggerId", document.get("trigger_id"))
    if isinstance(trigger, int) and not isinstance(trigger, bool):
        trigger = str(trigger)
    if trigger not in (None, "") and not (isinstance(trigger, str) and re.fullmatch(TRIGGER_ID_PATTERN, trigger)):
        raise BadRequest(f"'triggerId' must be an id such as \"a1b2c3\" (letters, digits, - _ . :, at most "
                         f"128), not {json_type(trigger)}")
    return trigger or None, _round_number(document.get("roundNumber", document.get("round_number")))


def _round_number(value: object) -> int:
    """The round the call names, or 0. Only logged (the run asks Numerai), so never worth refusing a call."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is not None:
        log.warning("numerai-webhook: ignored a 'roundNumber' that is not a round number (%s)", json_type(value))
    return 0
