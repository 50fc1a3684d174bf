"""What the triggers call: the scheduled run, and the HTTP test run with its request checks.

`function_app.py` only binds these to triggers; `python -m shared run` calls them too.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shared.errors import SubmitterError
from shared.manifest import MODEL_NAME_PATTERN
from shared.pipeline import report_unexpected, run_job
from shared.report import Mode, RunReport

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_MODELS = 200
# {"models": [...]} nests two levels; ignored fields may add a few.
MAX_BODY_DEPTH = 8
# What a trigger id may be: Numerai's are opaque; this keeps anything else out of reports and queries.
TRIGGER_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"


@dataclass(frozen=True)
class HttpAnswer:
    """What an HTTP trigger answers."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    mimetype: str = "application/json"


class RunFailed(SubmitterError):
    """Raised after the report is saved, so that Azure marks the invocation failed."""


class BadRequest(SubmitterError):
    """An HTTP request (the test run's, the webhook's) cannot be understood; answered with 400."""


def scheduled_run(past_due: bool = False) -> RunReport:
    """The timer's job: predict and upload every model; raise RunFailed if anything failed."""
    report = run_job(Mode.SCHEDULED, past_due=past_due)
    raise_if_failed(report)
    return report


def raise_if_failed(report: RunReport) -> None:
    """Raise RunFailed carrying the report's summary when the run failed."""
    if report.failed:
        raise RunFailed(report.summary())


def test_run(body: bytes, query: Mapping[str, str]) -> HttpAnswer:
    """The HTTP test run. It never uploads, whatever the request asks.

    400 for a request it cannot use, saying why; otherwise the run's report, with 500 if the run
    failed. Nothing escapes: an error of ours is answered 500 with a report saved like any run's.
    In queue mode the models run as queue tasks: 202 with the run id and the URL to poll
    (Location), since Azure cuts an HTTP request at 230 s.
    """
    try:
        models = parse_model_selection(body, query)
        report = run_job(Mode.TEST, models)
    except BadRequest as exc:
        return HttpAnswer(400, json.dumps({"error": str(exc)}))
    except Exception as exc:  # a bug or a library surprise outside the run: still reported
        log.exception("the test run stopped by an unexpected error")
        return HttpAnswer(500, report_unexpected(Mode.TEST, exc).to_json())
    if report.fanned_out:
        poll = f"/api/runs/{report.run_id}"
        accepted = {"run_id": report.run_id, "status": report.status.value, "status_url": poll,
                    "models": [m.name for m in report.models]}
        return HttpAnswer(202, json.dumps(accepted), {"Location": poll, "Retry-After": "10"})
    return HttpAnswer(500 if report.failed else 200, report.to_json())


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
    from shared.scaleout.messages import RUN, TaskMessage, TaskQueue
    from shared.settings import load_settings

    try:
        trigger_id, round_number = _webhook_fields(body)
        delivery = f"webhook-{uuid.uuid4().hex[:12]}"
        TaskQueue(load_settings()).send(TaskMessage(RUN, delivery, round_number, trigger_id=trigger_id))
    except BadRequest as exc:
        log.warning("numerai-webhook: %s; nothing was queued", exc)
        return HttpAnswer(400, json.dumps({"error": str(exc)}))
    except SubmitterError as exc:  # a setting at fault, or the queue unreachable: the message says which
        log.error("numerai-webhook: the run was not queued: %s", exc)
        return HttpAnswer(500, json.dumps({"error": f"the run was not queued: {exc}"}))
    log.info("numerai-webhook: queued the scheduled run as %s (trigger %s, round %s)", delivery, trigger_id,
             round_number or "not named")
    return HttpAnswer(202, json.dumps({"queued": RUN, "delivery": delivery, "trigger_id": trigger_id}))


def _webhook_fields(body: bytes) -> tuple[str | None, int]:
    """(trigger id or None, round number or 0) from the webhook call's body."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not body.strip():
        return None, 0
    document = _json_document(body, '{"triggerId": "...", "roundNumber": 1234}')
    trigger = document.get("triggerId", document.get("trigger_id"))
    if isinstance(trigger, int) and not isinstance(trigger, bool):
        trigger = str(trigger)
    if trigger not in (None, "") and not (isinstance(trigger, str) and re.fullmatch(TRIGGER_ID_PATTERN, trigger)):
        raise BadRequest(f"'triggerId' must be an id such as \"a1b2c3\" (letters, digits, - _ . :, at most "
                         f"128), not {_json_type(trigger)}")
    return trigger or None, _round_number(document.get("roundNumber", document.get("round_number")))


def _round_number(value: object) -> int:
    """The round the call names, or 0. Only logged (the run asks Numerai), so never worth refusing a call."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is not None:
        log.warning("numerai-webhook: ignored a 'roundNumber' that is not a round number (%s)", _json_type(value))
    return 0


def model_task(body: bytes, dequeue_count: int) -> None:
    """The queue trigger's job: one model of a fanned-out run (raises to have the host retry it), or
    the scheduled run a webhook call queued (raises RunFailed if it failed)."""
    from shared.scaleout.messages import BadTask
    from shared.scaleout.task import run_task  # the queue's client loads only where tasks run

    try:
        run_task(body, dequeue_count)
    except BadTask as exc:
        log.error("%s; dropped", exc)  # no retry can make it one of ours


def poisoned_task(body: bytes, dequeue_count: int) -> None:
    """The poison queue trigger's job: record that a model's task never finished."""
    from shared.scaleout.messages import BadTask
    from shared.scaleout.task import run_poisoned

    try:
        run_poisoned(body, dequeue_count)
    except BadTask as exc:
        log.error("%s; dropped", exc)


def list_runs(query: Mapping[str, str]) -> HttpAnswer:
    """GET /api/runs: the newest runs first, `?limit=` of them (default 20, at most 100)."""
    from shared.runs import recent_runs

    return _runs_answer(lambda: {"runs": recent_runs(query.get("limit"))})


def get_run(run_id: str) -> HttpAnswer:
    """GET /api/runs/{run_id}: the run's report, and whether the run is finished."""
    from shared.runs import run_status

    return _runs_answer(lambda: run_status(run_id))


def report_page() -> HttpAnswer:
    """GET /api/report: the report page (reports/index.html), made now if none is stored yet."""
    from shared.report_page import page_response

    status, content_type, body = page_response()
    return HttpAnswer(status, body, mimetype=content_type)


def _runs_answer(answer: Callable[[], dict]) -> HttpAnswer:
    from shared.runs import RunsError

    try:
        return HttpAnswer(200, json.dumps(answer(), indent=2))
    except RunsError as exc:
        return HttpAnswer(exc.status, json.dumps({"error": str(exc)}))
    except SubmitterError as exc:  # a setting at fault: the message names it
        return HttpAnswer(500, json.dumps({"error": str(exc)}))


def parse_model_selection(body: bytes, query: Mapping[str, str]) -> list[str] | None:
    """Which models to run, from `?models=a,b` or a JSON body `{"models": [...]}`; None for all."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if query.get("models"):
        names: object = [n.strip() for n in query["models"].split(",") if n.strip()]
    elif body.strip():
        document = _json_object(body)
        if "models" not in document:
            return None
        names = document["models"]
    else:
        return None
    if not isinstance(names, list):
        raise BadRequest(f"'models' must be a list of model names such as [\"my_model\"], not {_json_type(names)}")
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise BadRequest(f"'models' must be a list of model names; it holds {_json_type(wrong[0])}")
    if not names or len(names) > MAX_MODELS:
        raise BadRequest(f"'models' must name between 1 and {MAX_MODELS} models")
    bad = [n for n in names if not re.fullmatch(MODEL_NAME_PATTERN, n)]
    if bad:
        raise BadRequest(f"not a Numerai model name: {bad[0][:70]!r}")
    return names


def _json_object(body: bytes) -> dict[str, object]:
    document = _json_document(body, '{"models": ["my_model"]}')
    ignored = sorted(set(document) - {"models"})
    if ignored:
        # A test run never uploads; fields such as "upload" are ignored, not obeyed.
        log.warning("test run: ignored request fields %s", ", ".join(ignored)[:200])
    return document


def _json_document(body: bytes, example: str) -> dict[str, object]:
    """The body as a JSON object; BadRequest naming `example` if it is not one."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    if _nesting_depth(text) > MAX_BODY_DEPTH:
        # Checked before parsing: Python's JSON parser recurses, and a deep body exhausts its stack.
        raise BadRequest(f"the request body is nested more than {MAX_BODY_DEPTH} levels deep; "
                         f"send an object such as {example}")
    try:
        document = json.loads(text)
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(document, dict):
        raise BadRequest(f"the request body must be a JSON object such as {example}")
    return document


def _nesting_depth(text: str) -> int:
    """How deeply JSON text nests arrays and objects, brackets inside strings aside."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "a number")
