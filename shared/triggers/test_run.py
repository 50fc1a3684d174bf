"""The HTTP test run: every step but the upload, with the report as the answer."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from shared.errors import BadRequest
from shared.manifest import MODEL_NAME_PATTERN
from shared.report import Mode
from shared.run.job import report_unexpected, run_job
from shared.triggers.answers import HttpAnswer, check_size, json_document, json_type
from shared.triggers.executors import executor_for

log = logging.getLogger(__name__)

MAX_MODELS = 200


def test_run(body: bytes, query: Mapping[str, str]) -> HttpAnswer:
    """The HTTP test run. It never uploads, whatever the request asks.

    400 for a request it cannot use, saying why; otherwise the run's report, with 500 if the run
    failed. Nothing escapes: an error of ours is answered 500 with a report saved like any run's.
    In queue mode the models run as queue tasks: 202 with the run id and the URL to poll
    (Location), since Azure cuts an HTTP request at 230 s.
    """
    try:
        models = parse_model_selection(body, query)
        report = run_job(Mode.TEST, executor_for, models)
    except BadRequest as exc:
        return HttpAnswer(400, json.dumps({"error": str(exc)}))
    except Exception as exc:  # a bug or a library surprise outside the run: still reported
        log.exception("the test run stopped by an unexpected error")
        return HttpAnswer(500, report_unexpected(Mode.TEST, exc).to_json())
    if report.fanned_out:
        poll = f"/api/runs/{report.run_id}"
        accepted = {
            "run_id": report.run_id,
            "status": report.status.value,
            "status_url": poll,
            "models": [m.name for m in report.models],
        }
        return HttpAnswer(202, json.dumps(accepted), {"Location": poll, "Retry-After": "10"})
    return HttpAnswer(500 if report.failed else 200, report.to_json())


def parse_model_selection(body: bytes, query: Mapping[str, str]) -> list[str] | None:
    """Which models to run, from `?models=a,b` or a JSON body `{"models": [...]}`; None for all."""
    check_size(body)
    if query.get("models"):
        names: object = [n.strip() for n in query["models"].split(",") if n.strip()]
    elif body.strip():
        document = _selection_document(body)
        if "models" not in document:
            return None
        names = document["models"]
    else:
        return None
    if not isinstance(names, list):
        raise BadRequest(
            f"'models' must be a list of model names such as [\"my_model\"], not {json_type(names)}"
        )
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise BadRequest(f"'models' must be a list of model names; it holds {json_type(wrong[0])}")
    if not names or len(names) > MAX_MODELS:
        raise BadRequest(f"'models' must name between 1 and {MAX_MODELS} models")
    bad = [n for n in names if not re.fullmatch(MODEL_NAME_PATTERN, n)]
    if bad:
        raise BadRequest(f"not a Numerai model name: {bad[0][:70]!r}")
    return names


KNOWN_FIELDS = ("models",)


def _selection_document(body: bytes) -> dict[str, object]:
    document = json_document(body, '{"models": ["my_model"]}')
    unknown = sorted(set(document) - set(KNOWN_FIELDS))
    if unknown:
        # A typo such as "model" would otherwise run every model and answer 200.
        raise BadRequest(_unknown_fields_message(unknown))
    return document


def _unknown_fields_message(unknown: list[str]) -> str:
    names = ", ".join(repr(name[:40]) for name in unknown[:5])
    known = ", ".join(repr(name) for name in KNOWN_FIELDS)
    message = (
        f"the test run's body has an unknown field{'s' if len(unknown) > 1 else ''} {names}; "
        f"the known field{'s are' if len(KNOWN_FIELDS) > 1 else ' is'} {known}, "
        'as in {"models": ["my_model"]}'
    )
    if "upload" in unknown:
        message += (
            "; a test run never uploads (the timer, or `python -m shared run --submit`, does)"
        )
    return message
