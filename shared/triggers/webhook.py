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
from typing import TYPE_CHECKING

from shared.errors import AppError, BadRequest
from shared.executors.queue.messages import RUN, TaskMessage, TaskQueue
from shared.limits import whole_number
from shared.manifest import MODEL_NAME_PATTERN
from shared.report import utc_now
from shared.triggers.answers import HttpAnswer, check_size, json_document, json_type
from shared.webhook_registration import MODEL_PARAMETER

if TYPE_CHECKING:
    from shared.numerai_client import RoundInfo
    from shared.settings import Settings
    from shared.storage import Results

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
    message on the task queue (kind "run"), which the queue trigger runs. The call is recorded
    first, with its trigger id, once per model and round: a later call for the model in the round
    queues nothing, and a call for a round that is not open is refused; both are answered 200 with
    the reason (any other answer and Numerai calls again). 400 for a body or URL it cannot use, and
    nothing is queued; 500 if Numerai, the storage or the queue cannot be reached.
    """
    # The clients load only where they are used.
    from shared.numerai_client import NumeraiClient
    from shared.settings import load_settings
    from shared.storage import Results

    try:
        call = read_call(body, query or {})
        settings = load_settings()
        round_number, refusal = _open_round(NumeraiClient(settings).current_round(), call)
        if refusal is None:
            delivery, refusal = _queue_once(
                Results.from_settings(settings), settings, call, round_number
            )
    except BadRequest as exc:
        log.warning("numerai-webhook: %s; nothing was queued", exc)
        return HttpAnswer(400, json.dumps({"error": str(exc)}))
    except AppError as exc:  # a setting at fault, Numerai, the storage or the queue unreachable
        log.error("numerai-webhook: the run was not queued: %s", exc)
        return HttpAnswer(500, json.dumps({"error": f"the run was not queued: {exc}"}))
    if refusal is not None:
        log.warning("numerai-webhook: %s; nothing was queued", refusal)
        answer = {"queued": None, "reason": refusal, "model": call.model}
        return HttpAnswer(200, json.dumps({**answer, "trigger_id": call.trigger_id}))
    _log_queued(call, delivery)
    return HttpAnswer(
        200,
        json.dumps(
            {
                "queued": RUN,
                "delivery": delivery,
                "model": call.model,
                "trigger_id": call.trigger_id,
                "round": round_number,
            }
        ),
    )


def _open_round(current: RoundInfo | None, call: WebhookCall) -> tuple[int, str | None]:
    """The open round the call is for, or why it is refused: no round open, or the call names another.

    A call for a past round (a replay) must not submit the current one with its trigger id.
    """
    if current is None or not current.is_open():
        what = "no round" if current is None else f"round {current.number}, the current,"
        return (
            0,
            f"{what} is open for submissions, so the call of round {call.round_number or '(not named)'} runs nothing; the schedule's runs take the next round",
        )
    if call.round_number and call.round_number != current.number:
        return 0, (
            f"the call is for round {call.round_number} and round {current.number} is open: it "
            "runs nothing (a call of another round's, replayed?); the schedule's runs submit the open round"
        )
    return current.number, None


def _queue_once(
    results: Results, settings: Settings, call: WebhookCall, round_number: int
) -> tuple[str, str | None]:
    """Record the call and queue its run, unless a call for the model in the round already did:
    the delivery id, and the reason when nothing was queued."""
    delivery = f"webhook-{uuid.uuid4().hex[:12]}"
    record = {
        "delivery": delivery,
        "trigger_id": call.trigger_id,
        "model": call.model,
        "round_number": round_number,
        "is_test": call.is_test,
        "received_at": utc_now(),
    }
    if not results.runs.record_webhook_call(round_number, call.model, json.dumps(record)):
        who = f"model {call.model}" if call.model else "every model"
        return delivery, (
            f"a call for {who} in round {round_number} already queued its run, so this one "
            "queues nothing: each model's run is queued once a round"
        )
    try:
        TaskQueue(settings).send(TaskMessage(RUN, delivery, round_number, model=call.model))
    except AppError:
        results.runs.forget_webhook_call(
            round_number, call.model
        )  # so that Numerai's retry queues it
        raise
    return delivery, None


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
