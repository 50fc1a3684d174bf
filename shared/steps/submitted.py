"""What the round already has: submissions in the ledger (or at Numerai, after a run that stopped)."""

from __future__ import annotations

from shared.errors import SubmissionUnknown
from shared.report import ModelReport, ModelStatus, SubmissionState
from shared.steps.context import RoundContext


def already_submitted(
    ctx: RoundContext, names: list[str], account: dict[str, str]
) -> dict[str, ModelReport]:
    """The lines of the models among `names` that need no submission this run, by name.

    A model submitted for the round, including by a run that stopped before recording it,
    is `already_submitted`; one whose submission may exist but cannot be checked fails,
    so that it is not submitted twice. Models not in the account (submit: false) are left out.
    """
    submitter = ctx.submitter()
    decided: dict[str, ModelReport] = {}
    for name in names:
        if name not in account:
            continue
        try:
            submission_id = submitter.existing(name, account[name])
        except SubmissionUnknown as exc:
            line = ModelReport(name, submission=SubmissionState.UNKNOWN)
            line.fail(str(exc))
            decided[name] = line
            continue
        if submission_id is not None:
            decided[name] = ModelReport(
                name,
                status=ModelStatus.ALREADY_SUBMITTED,
                submission_id=submission_id,
                submission=SubmissionState.EXISTS,
            )
    return decided


def note_ledger(ctx: RoundContext, line: ModelReport) -> None:
    """A test run submits nothing, but its lines still say which models the ledger has for the round."""
    record = ctx.results.ledger.submission_for(ctx.round_number, line.name)
    if record is not None:
        line.submission_id = record.submission_id
        line.submission = SubmissionState.EXISTS
