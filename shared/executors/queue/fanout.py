"""Fan out: a run that has found its pending models sends one queue task per model."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

from shared.errors import QueueError
from shared.executors.queue.fanin import finish_if_complete, model_message
from shared.executors.queue.messages import DEADLINE, TaskMessage, TaskQueue
from shared.executors.queue.plan import FanOutPlan
from shared.manifest import ModelSpec
from shared.report import Execution, ModelReport, ModelStatus, RunReport
from shared.steps.context import RoundContext
from shared.storage import Results

log = logging.getLogger(__name__)

# The deadline message arrives this long after the run's deadline: tasks start no upload
# after the deadline itself, and one already uploading has this long to record it.
DEADLINE_GRACE_SECONDS = 120


class QueueExecutor:
    """MODEL_EXECUTION=queue: one task per model on the task queue; the task that completes the set
    finishes the report."""

    def execute(
        self,
        ctx: RoundContext,
        pending: list[ModelSpec],
        account: dict[str, str],
        report: RunReport,
    ) -> None:
        """Send a task per pending model; the report is saved running and the last task finishes it.

        Raises QueueError if the queue cannot be reached at all; a model whose own message
        could not be sent is recorded as failed, so the run still ends with a complete report.
        """
        queue = TaskQueue(ctx.settings)
        seconds = max(ctx.ends_at - time.monotonic(), 0.0)
        plan = FanOutPlan(
            ctx.run_id,
            ctx.mode,
            ctx.round_number,
            ctx.settings.data_version,
            report.started_at,
            (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(),
            {spec.name: spec.model_dump(mode="json") for spec in pending},
            {spec.name: account[spec.name] for spec in pending if spec.name in account},
            trigger_id=ctx.trigger_id,
            decided={
                line.name: json.loads(line.to_json())
                for line in report.models
                if line.status is not ModelStatus.PENDING
            },
            submit_late=ctx.settings.submit_late,
        )
        # The deadline goes first: whatever happens next, the run is reported by then.
        plan.deadline_message = list(
            queue.send(
                TaskMessage(DEADLINE, ctx.run_id, ctx.round_number),
                seconds + DEADLINE_GRACE_SECONDS,
            )
        )
        results = ctx.results
        results.runs.write_plan(ctx.run_id, plan.to_json())
        report.execution = Execution.QUEUE
        report.redact()
        report.report_blob = results.runs.write_report(ctx.run_id, report.to_json())
        # An ensemble waits for its members' results (fanin.release_ensembles), unless none is in this run.
        first = [s for s in pending if not _waits(s, plan)]
        unsent = _send_models(queue, results, plan, first)
        log.info(
            "run %s: %d model tasks queued on '%s', %d ensembles wait for their members",
            ctx.run_id,
            len(first) - len(unsent),
            ctx.settings.task_queue,
            len(pending) - len(first),
        )
        if unsent:
            finish_if_complete(results, plan, queue)


def _waits(spec: ModelSpec, plan: FanOutPlan) -> bool:
    return any(member in plan.models for member in spec.members or {})


def _send_models(
    queue: TaskQueue, results: Results, plan: FanOutPlan, pending: list[ModelSpec]
) -> list[str]:
    """Send each model's task; a model whose message fails gets its failed result at once."""
    unsent = []
    for spec in pending:
        try:
            queue.send(model_message(plan, spec.name))
        except QueueError as exc:
            line = ModelReport(spec.name)
            line.fail(
                f"model '{spec.name}': its task could not be queued, so it was not run: {exc}"
            )
            results.runs.add_task_result(plan.run_id, spec.name, line.to_json())
            unsent.append(spec.name)
    return unsent
