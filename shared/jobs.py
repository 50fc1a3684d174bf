"""What the triggers call: the scheduled run, and the HTTP test run with its request checks.

`function_app.py` only binds these to triggers; `python -m shared run` calls them too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from shared.errors import SubmitterError
from shared.manifest import MODEL_NAME_PATTERN
from shared.pipeline import run_job
from shared.report import Mode, RunReport

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_MODELS = 200


class RunFailed(SubmitterError):
    """Raised after the report is saved, so that Azure marks the invocation failed."""


class BadRequest(SubmitterError):
    """The HTTP test run's request cannot be understood; answered with 400."""


def scheduled_run(past_due: bool = False) -> RunReport:
    """The timer's job: predict and upload every model; raise RunFailed if anything failed."""
    report = run_job(Mode.SCHEDULED, past_due=past_due)
    raise_if_failed(report)
    return report


def raise_if_failed(report: RunReport) -> None:
    """Raise RunFailed carrying the report's summary when the run failed."""
    if report.failed:
        raise RunFailed(report.summary())


def test_run(body: bytes, query: Mapping[str, str]) -> tuple[int, str]:
    """The HTTP test run: (status code, JSON body). It never uploads, whatever the request asks."""
    try:
        models = parse_model_selection(body, query)
    except BadRequest as exc:
        return 400, json.dumps({"error": str(exc)})
    report = run_job(Mode.TEST, models)
    return (500 if report.failed else 200), report.to_json()


def parse_model_selection(body: bytes, query: Mapping[str, str]) -> list[str] | None:
    """Which models to run, from `?models=a,b` or a JSON body `{"models": [...]}`; None for all."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    names: object = None
    if query.get("models"):
        names = [n.strip() for n in query["models"].split(",") if n.strip()]
    elif body.strip():
        names = _models_from_body(body)
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("'models' must be a list of model names")
    if not names or len(names) > MAX_MODELS:
        raise BadRequest(f"'models' must name between 1 and {MAX_MODELS} models")
    bad = [n for n in names if not re.fullmatch(MODEL_NAME_PATTERN, n)]
    if bad:
        raise BadRequest(f"not a Numerai model name: {bad[0][:70]!r}")
    return names


def _models_from_body(body: bytes) -> object:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(document, dict):
        raise BadRequest('the request body must be a JSON object such as {"models": ["my_model"]}')
    ignored = sorted(set(document) - {"models"})
    if ignored:
        # A test run never uploads; fields such as "upload" are ignored, not obeyed.
        log.warning("test run: ignored request fields %s", ", ".join(map(str, ignored))[:200])
    return document.get("models")
