"""Fan in: the task that completes a run's set of results writes its final report.

No coordinator waits for the tasks. Each task keeps its model's result in the
results container, then looks whether every planned model has one; if so it
replaces the running report, on the condition that it is still the version it
read. Of tasks finishing together exactly one succeeds; that one records the
run's telemetry, so the alerts see a fanned-out run as they see a local one.

Any step may be the last an instance takes (issue #21, items 4, 7, 8), so each
is finished by whichever delivery comes next: a run finished but not yet
published is published by the next delivery that sees it (a redelivery, the
deadline message), at least once; an ensemble marked released but not sent is
sent by the redelivery of the task that marked it; and a result that says
Numerai has the submission replaces a kept one that does not (the deadline's),
correcting a finished report.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from shared.errors import QueueError
from shared.executors.queue.messages import MODEL, TaskMessage, TaskQueue
from shared.executors.queue.plan import FanOutPlan
from shared.report import ModelReport, RunReport, RunStatus, SubmissionState, worked_on
from shared.steps.publish import publish
from shared.steps.window import settled
from shared.storage import Results

log = logging.getLogger(__name__)


def keep_result(results: Results, plan: FanOutPlan, line: ModelReport) -> bool:
    """Keep a model's result unless it already has one (the first result stands); True if kept.

    One exception: a result saying Numerai has the model's submission replaces a kept one
    that does not (the deadline's, while the task's upload was still on its way), and the
    run's report, if already finished, is corrected.
    """
    line_json = line.to_json()
    kept = results.runs.add_task_result(plan.run_id, line.name, line_json)
    if not kept:
        log.info(
            "run %s: model %s already has a result; this one is dropped", plan.run_id, line.name
        )
        if line.submission is SubmissionState.EXISTS:
            _correct(results, plan, line)
    return kept


def _correct(results: Results, plan: FanOutPlan, line: ModelReport) -> None:
    """Replace a kept result that denies the submission `line` has; then the finished report's line."""
    text = results.runs.task_result(plan.run_id, line.name)
    if text is None or ModelReport.from_dict(json.loads(text)).submission is SubmissionState.EXISTS:
        return
    line.warnings.append(
        f"model '{line.name}': its task finished after the run's deadline ({plan.deadline}) had "
        "failed it; Numerai has its submission, so the report was corrected"
    )
    log.warning("run %s: %s", plan.run_id, line.warnings[-1])
    results.runs.replace_task_result(plan.run_id, line.name, line.to_json())
    for _ in range(_CORRECTION_TRIES):
        current = results.runs.read_report_for_update(plan.run_id)
        if current is None:
            return
        report = RunReport.from_json(current[0])
        if report.status is RunStatus.RUNNING:
            return  # the task that finishes the run reads the corrected result
        report.models = [
            worked_on(ModelReport(m.name, warnings=m.warnings), line) if m.name == line.name else m
            for m in report.models
        ]
        # Its status follows from the corrected lines, as when the run first finished.
        report.status, report.reason = RunStatus.RUNNING, None
        report.finish()
        report.redact()
        if results.runs.replace_report(plan.run_id, report.to_json(), current[1]):
            _mark_window(results, plan, report)
            publish(report, results, _seconds_since(plan.started_at))
            results.runs.mark_published(plan.run_id)
            return


# A correction that meets another writer of the report reads it again; two writers at once is rare.
_CORRECTION_TRIES = 3


def model_message(plan: FanOutPlan, name: str) -> TaskMessage:
    """The task message of a planned model."""
    return TaskMessage(MODEL, plan.run_id, plan.round_number, name, plan.spec(name).digest())


def finish_if_complete(
    results: Results, plan: FanOutPlan, queue: TaskQueue | None, by: str | None = None
) -> RunReport | None:
    """Send the ensembles whose members are done, and write the run's final report if every planned model
    has its result; the report, or None.

    `by` names the model whose delivery this is (None: the planner). None when results are
    still missing, or when another task finished the run first and published it. Each call
    lists the results' names; only the task that finds the set complete reads them, so a run's
    fan-in reads in proportion to its models, not to their square.
    """
    done = results.runs.task_result_names(plan.run_id)
    if queue is not None:
        _release_ensembles(results, plan, queue, done, by or _PLANNER)
    missing = set(plan.models) - done
    if missing:
        log.info(
            "run %s: %d of %d models done",
            plan.run_id,
            len(plan.models) - len(missing),
            len(plan.models),
        )
        return None
    current = results.runs.read_report_for_update(plan.run_id)
    if current is None:
        log.warning("run %s has results for every model but no report to finish", plan.run_id)
        return None
    text, etag = current
    report = RunReport.from_json(text)
    if report.status is not RunStatus.RUNNING:
        return _publish_once(results, plan, report, queue)
    found = results.runs.task_results(plan.run_id)
    report.models = [
        worked_on(m, ModelReport.from_dict(json.loads(found[m.name]))) if m.name in found else m
        for m in report.models
    ]
    report.finish()
    report.redact()
    if not results.runs.replace_report(plan.run_id, report.to_json(), etag):
        return None  # another task finished it a moment ago
    return _publish_once(results, plan, report, queue)


def _publish_once(
    results: Results, plan: FanOutPlan, report: RunReport, queue: TaskQueue | None
) -> RunReport | None:
    """Publish the finished run unless a delivery already did; the report if this one did.

    The mark follows the record, so a task that dies between them leaves the run to the next
    delivery (at least once: rarely, two deliveries reading in that instant both record it).
    """
    if results.runs.published(plan.run_id):
        return None
    _mark_window(results, plan, report)
    publish(report, results, _seconds_since(plan.started_at))
    results.runs.mark_published(plan.run_id)
    if queue is not None and plan.deadline_message:
        queue.delete(*plan.deadline_message)
    return report


def _mark_window(results: Results, plan: FanOutPlan, report: RunReport) -> None:
    """After the staking close, the round is checked once the finished report's outcomes are final."""
    if report.after_window and settled(report.models, plan.submit_late):
        results.runs.mark_window_checked(plan.round_number, plan.run_id)


# The releaser's name in a release mark when the planner itself sent an ensemble (no model's task).
_PLANNER = "(planner)"


def _release_ensembles(
    results: Results, plan: FanOutPlan, queue: TaskQueue, found: set[str], by: str
) -> None:
    """Send each ensemble's task once all its members in the run have results (whatever they are)."""
    for name in plan.models:
        members = plan.spec(name).members
        if (
            members is None
            or name in found
            or any(m in plan.models and m not in found for m in members)
        ):
            continue
        # Only the task that marks it released sends it: every later result would find it ready
        # too. If that task died before sending, its own redelivery sends it: another task cannot
        # tell a dead releaser from one about to send.
        if results.runs.mark_released(
            plan.run_id, name, by
        ) or by == results.runs.unsent_release_by(plan.run_id, name):
            try:
                queue.send(model_message(plan, name))
            except QueueError as exc:
                line = ModelReport(name)
                line.fail(f"model '{name}': its task could not be queued, so it was not run: {exc}")
                keep_result(results, plan, line)
                found.add(name)
            else:
                results.runs.mark_sent(plan.run_id, name, by)


def handle_deadline(results: Results, plan: FanOutPlan) -> RunReport | None:
    """At the run's deadline: every model still without a result failed; finish the run."""
    done = results.runs.task_result_names(plan.run_id)
    for name in plan.models:
        if name not in done:
            line = ModelReport(name)
            line.fail(
                f"model '{name}': no result by the run's deadline ({plan.deadline}); its task was "
                "still queued or running (too few instances, or a model slower than the run allows?)"
            )
            keep_result(results, plan, line)
    return finish_if_complete(results, plan, None)


def _seconds_since(iso: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
