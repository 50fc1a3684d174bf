"""The timer's job (and the webhook's queued run of its model): predict and upload; fail the
invocation on failure."""

from __future__ import annotations

from shared.errors import RunFailed
from shared.report import Mode, RunReport
from shared.run.job import run_job
from shared.triggers.executors import executor_for


def scheduled_run(
    past_due: bool = False,
    trigger_id: str | None = None,
    model: str | None = None,
    notes: list[str] | None = None,
    trigger_round: int | None = None,
) -> RunReport:
    """Predict and upload every model, or only `model` (a webhook call's); raise RunFailed (after the
    report is saved) if anything failed.

    A webhook call is one model's: its ensemble's members are predicted, not submitted, as each
    has its own call and trigger id; its `trigger_round` is the round the call was for.
    """
    report = run_job(
        Mode.SCHEDULED,
        executor_for,
        [model] if model else None,
        past_due=past_due,
        trigger_id=trigger_id,
        submit_members=model is None,
        notes=notes,
        trigger_round=trigger_round,
    )
    raise_if_failed(report)
    return report


def raise_if_failed(report: RunReport) -> None:
    """Raise RunFailed carrying the report's summary when the run failed."""
    if report.failed:
        raise RunFailed(report.summary())
