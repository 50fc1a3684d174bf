"""The runs API (GET /api/runs, GET /api/runs/{id}) and the report page (GET /api/report).

Recent runs, and one run's report while it runs and once it has finished.

Read from the reports in the results container. A fanned-out run's report is
saved running; while it runs, the results its tasks have kept so far are shown
in it, so a poller sees each model finish.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

from shared.errors import AppError, RunsError, StorageError
from shared.limits import whole_number
from shared.report import RUN_ID_PATTERN, Execution, ModelReport, RunReport, RunStatus, worked_on
from shared.settings import load_settings
from shared.storage import Results
from shared.triggers.answers import HttpAnswer

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
T = TypeVar("T")
RUN_ID = re.compile(RUN_ID_PATTERN)


def list_runs(query: Mapping[str, str]) -> HttpAnswer:
    """GET /api/runs: the newest runs first, `?limit=` of them (default 20, at most 100)."""
    return _answer(lambda: {"runs": recent_runs(query.get("limit"))})


def get_run(run_id: str) -> HttpAnswer:
    """GET /api/runs/{run_id}: the run's report, and whether the run is finished."""
    return _answer(lambda: run_status(run_id))


def report_page() -> HttpAnswer:
    """GET /api/report: the report page (reports/index.html), made now if none is stored yet."""
    from shared.report_page import PAGE_HEADERS, page_response

    status, content_type, body = page_response()
    return HttpAnswer(status, body, headers=dict(PAGE_HEADERS), mimetype=content_type)


def _answer(answer: Callable[[], dict]) -> HttpAnswer:
    try:
        return HttpAnswer(200, json.dumps(answer(), indent=2))
    except RunsError as exc:
        return HttpAnswer(exc.status, json.dumps({"error": str(exc)}))
    except AppError as exc:  # a setting at fault: the message names it
        return HttpAnswer(500, json.dumps({"error": str(exc)}))


def recent_runs(limit_text: str | None, environ: Mapping[str, str] | None = None) -> list[dict]:
    """A summary of each of the newest runs, newest first."""
    limit = _limit(limit_text)
    results = _results(environ)
    summaries = []
    for run_id in reversed(_storage(results.runs.report_ids)[-limit:]):
        try:
            report = _report(results, run_id)
        except (
            RunsError
        ) as exc:  # one unreadable report is that run's entry, not the list's failure
            summaries.append({"run_id": run_id, "error": str(exc)})
            continue
        counts = Counter(m.status.value for m in report.models)
        summaries.append(
            {
                "run_id": report.run_id,
                "mode": report.mode.value,
                "status": report.status.value,
                "finished": report.status is not RunStatus.RUNNING,
                "execution": report.execution.value,
                "round": report.round_number,
                "started_at": report.started_at,
                "finished_at": report.finished_at,
                "reason": report.reason,
                "models": dict(counts),
            }
        )
    return summaries


def run_status(run_id: str, environ: Mapping[str, str] | None = None) -> dict:
    """One run's report and whether it is finished; a running fanned-out run shows the models done so far."""
    if not RUN_ID.fullmatch(run_id):
        raise RunsError(
            f"not a run id: {run_id[:80]!r}; run ids look like "
            "20261128T121500123456Z-scheduled-1a2b3c4d (GET /api/runs lists them)",
            400,
        )
    results = _results(environ)
    report = _report(results, run_id)
    finished = report.status is not RunStatus.RUNNING
    if not finished and report.execution is Execution.QUEUE:
        done = _storage(lambda: results.runs.task_results(run_id))
        report.models = [
            worked_on(m, ModelReport.from_dict(json.loads(done[m.name]))) if m.name in done else m
            for m in report.models
        ]
    return {"run_id": run_id, "finished": finished, "report": json.loads(report.to_json())}


def _report(results: Results, run_id: str) -> RunReport:
    text = _storage(lambda: results.runs.find_report(run_id))
    if text is None:
        raise RunsError(f"no run {run_id} in the results container", 404)
    try:
        return RunReport.from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RunsError(
            f"report 'reports/{run_id}.json' is not a run report ({type(exc).__name__}: "
            f"{str(exc)[:200]}); GET /api/report shows the others",
            500,
        ) from exc


def _results(environ: Mapping[str, str] | None) -> Results:
    settings = load_settings(environ)
    return _storage(lambda: Results.from_settings(settings))


def _storage(read: Callable[[], T]) -> T:
    """`read()`, its storage errors answered 503: the request was fine, the storage was not."""
    try:
        return read()
    except StorageError as exc:
        raise RunsError(str(exc), 503) from exc


def _limit(text: str | None) -> int:
    if not text:
        return DEFAULT_LIMIT
    limit = whole_number(text)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise RunsError(
            f"limit must be a whole number from 1 to {MAX_LIMIT}; it is {text[:20]!r}", 400
        )
    return limit
