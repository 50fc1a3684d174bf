"""Numerai's webhook: a round opened for a model; its run is queued and the call answered 200 at once.

Numerai sets webhooks per model (`setSubmissionWebhook(modelId, ...)`) and its call's body names
no model, so the model is in the URL: `python -m shared webhooks --set` registers
`<url>&model=<name>` for each model. Numerai counts only a 200 as a successful call (numerai-cli's
Azure trigger turns its own 202 into 200 for that reason; its AWS trigger answers 200).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import AppError, BadRequest
from shared.limits import whole_number
from shared.manifest import MODEL_NAME_PATTERN
from shared.triggers.answers import HttpAnswer, check_size, json_document, json_type
from shared.webhook_registration import MODEL_PARAMETER

log = logging.getLogger(__name__)

# What a trigger id may be: Numerai's are opaque; this keeps anything else out of reports and queries.
TRIGGER_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
_EXAMPLE = '{"roundNumber": 1234, "triggerId": "...", "dataVersion": 5, "isTest": false}'


@dataclass(frozen=True)
class WebhookCall:
    """What one call of Numerai's webhook asks for."""

    model: (
        str | None
    )  # from the URL; None for a URL registered by an older version: every model runs
    trigger_id: (
        str | None
    )  # passed on to create_submission, so Numerai ties the submission to its call
    round_number: (
        int  # the round Numerai names, or 0: only logged, the run asks Numerai for the round
    )
    data_version: str | None  # what Numerai says its data version is: only logged
    is_test: (
        bool  # a test call (`numerai node test`): it runs and submits like any call, and is logged
    )


def numerai_webhook(body: bytes, query: Mapping[str, str] | None = None) -> HttpAnswer:
    """Numerai's call for a model: queue that model's scheduled run and answer 200 at once.

    Numerai does not wait for a run, and Azure cuts an HTTP request at 230 s, so the run is a
    message on the task queue (kind "run"), which the queue trigger runs. 400 for a body or URL
    it cannot use, and nothing is queued; 500 if the queue cannot be written.
    """
    # The queue's client loads only where it is used.
    from shared.executors.queue.messages import RUN, TaskMessage, TaskQueue
    from shared.settings import load_settings

    try:
        call = read_call(body, query or {})
        delivery = f"webhook-{uuid.uuid4().hex[:12]}"
        TaskQueue(load_settings()).send(
            TaskMessage(
                RUN, delivery, call.round_number, model=call.model, trigger_id=call.trigger_id
            )
        )
    except BadRequest as exc:
        log.warning("numerai-webhook: %s; nothing was queued", exc)
        return HttpAnswer(400, json.dumps({"error": str(exc)}))
    except AppError as exc:  # a setting at fault, or the queue unreachable: the message says which
        log.error("numerai-webhook: the run was not queued: %s", exc)
        return HttpAnswer(500, json.dumps({"error": f"the run was not queued: {exc}"}))
    _log_queued(call, delivery)
    return HttpAnswer(
        200,
        json.dumps(
            {
                "queued": RUN,
                "delivery": delivery,
                "model": call.model,
                "trigger_id": call.trigger_id,
            }
        ),
    )


def read_call(body: bytes, query: Mapping[str, str]) -> WebhookCall:
    """The call's model (from the URL) and body fields; BadRequest naming the field at fault."""
    model = _model(query)
    check_size(body)
    document = json_document(body, _EXAMPLE) if body.strip() else {}
    is_test = document.get("isTest", False)
    if not isinstance(is_test, bool) and is_test is not None:
        raise BadRequest(f"'isTest' must be true or false, not {json_type(is_test)}")
    round_number = _round_number(document.get("roundNumber", document.get("round_number")))
    return WebhookCall(
        model,
        _trigger_id(document),
        round_number,
        _data_version(document.get("dataVersion")),
        bool(is_test),
    )


def _model(query: Mapping[str, str]) -> str | None:
    """The model the URL names, or None when it names none (a URL an older version registered)."""
    if MODEL_PARAMETER not in query:
        return None
    name = query[MODEL_PARAMETER]
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise BadRequest(
            f"the URL's '{MODEL_PARAMETER}' must be a model name of the manifest "
            "(lower-case letters, digits and _, at most 64), as `python -m shared webhooks "
            "--set` registers it"
        )
    return name


def _trigger_id(document: dict[str, object]) -> str | None:
    """Numerai's trigger id (numerai-cli's GCP workflow reads `trigger_id`: both are accepted), or None."""
    trigger = document.get("triggerId", document.get("trigger_id"))
    if isinstance(trigger, int) and not isinstance(trigger, bool):
        trigger = str(trigger)
    if trigger not in (None, "") and not (
        isinstance(trigger, str) and re.fullmatch(TRIGGER_ID_PATTERN, trigger)
    ):
        raise BadRequest(
            f"'triggerId' must be an id such as \"a1b2c3\" (letters, digits, - _ . :, at most "
            f"128), not {json_type(trigger)}"
        )
    return trigger or None


def _round_number(value: object) -> int:
    """The round the call names, or 0. Only logged (the run asks Numerai), so never worth refusing a call."""
    number = whole_number(value) if isinstance(value, str) else None
    if number is not None:
        return number
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is not None:
        log.warning(
            "numerai-webhook: ignored a 'roundNumber' that is not a round number (%s)",
            json_type(value),
        )
    return 0


def _data_version(value: object) -> str | None:
    """The call's `dataVersion` (an integer in a community template), as text for the log; else None."""
    usable = isinstance(value, (int, str)) and not isinstance(value, bool)
    if usable and re.fullmatch(r"[\w.]{1,16}", str(value)):
        return str(value)
    if value is not None:
        log.warning(
            "numerai-webhook: ignored a 'dataVersion' that is not a version (%s)", json_type(value)
        )
    return None


def _log_queued(call: WebhookCall, delivery: str) -> None:
    """Say what was queued; a URL without a model is one an older version registered."""
    if call.model is None:
        log.warning(
            "numerai-webhook: the URL names no model (registered by an older version), so "
            "every model runs with this call's trigger id; run `python -m shared webhooks --set "
            "URL` to register one URL per model"
        )
    log.info(
        "numerai-webhook: queued the scheduled run of %s as %s (trigger %s, round %s, "
        "data version %s%s)",
        f"model {call.model}" if call.model else "every model",
        delivery,
        call.trigger_id,
        call.round_number or "not named",
        call.data_version or "not named",
        ", a test call" if call.is_test else "",
    )
