"""The round's staking window: a late submission is a choice, and after the close the app checks what Numerai lists.

Tuesday to Friday rounds can be staked for one hour. A submission after
`closeStakingTime` is scored but not staked, and the latest late one is queued
into the next round, so a scheduled run after the close archives its
predictions and uploads them only with SUBMIT_LATE=true. The first scheduled
run after the close also asks Numerai, per model, whether it lists a
submission it counts for the round: one listed under the round's number (a late
submission of the round before is queued into it, so its `insertedAt` is before the
round opened) and made before the staking close. That report is the round's last
word, and a model without one is `missed` (the alert that means "a model missed the round").
The round is marked checked only once no later run can change what it says (`settled`):
with SUBMIT_LATE, a model that failed is tried again by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from shared.errors import NumeraiApiError, NumeraiKeysRefused
from shared.numerai_client import ListedSubmission, NumeraiClient, RoundInfo
from shared.report import ModelReport, ModelStatus, SubmissionState

log = logging.getLogger(__name__)


def staking_closed_for(round_: RoundInfo, now: datetime | None = None) -> timedelta | None:
    """How long ago the round's staking closed; None while it is open (or not yet open)."""
    moment = now or datetime.now(UTC)
    return moment - round_.close_time if moment >= round_.close_time else None


def duration(delta: timedelta) -> str:
    """A duration as a person reads it: '45 s', '12 min', '2 h 5 min'."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def missed_reason(name: str, round_: RoundInfo, late: timedelta, archived: str | None) -> str:
    """Why a model's predictions were not uploaded after the staking close."""
    kept = (
        f"its predictions are archived ({archived})"
        if archived
        else "its predictions could not be made"
    )
    return (
        f"model '{name}': round {round_.number} closed for staking at {round_.close_time:%Y-%m-%d %H:%M} UTC, "
        f"{duration(late)} before it could be submitted; {kept} but were not uploaded: set SUBMIT_LATE=true "
        "to submit after the close (scored, not staked)"
    )


def settled(lines: Iterable[ModelReport], submit_late: bool) -> bool:
    """Whether a run after the staking close leaves every model an outcome no later run changes.

    Without SUBMIT_LATE nothing is uploaded after the close, so every outcome is final; with
    it, a model that failed (or never finished) may still be submitted late by the next run.
    """
    return not submit_late or all(
        line.status not in (ModelStatus.PENDING, ModelStatus.FAILED) for line in lines
    )


def check_listed(
    lines: dict[str, ModelReport],
    numerai: NumeraiClient,
    account: dict[str, str],
    round_: RoundInfo,
) -> None:
    """After the close: what Numerai lists for each model decides its line, not only the ledger.

    `lines` are the run's lines so far, pending or decided. A model the ledger lacks but
    Numerai lists (submitted another way) is already submitted; one the ledger has but
    Numerai does not list gets a warning.
    """
    for line in lines.values():
        if line.name not in account or line.status not in (
            ModelStatus.PENDING,
            ModelStatus.ALREADY_SUBMITTED,
        ):
            continue
        try:
            listed = numerai.round_submissions(account[line.name], round_.number)
        except NumeraiKeysRefused as exc:
            # Every other model would be refused the same way: asked and said once.
            line.warnings.append(
                f"model '{line.name}': whether Numerai lists a submission for round "
                f"{round_.number} could not be checked: {exc}; the other models were not checked"
            )
            return
        except NumeraiApiError as exc:
            line.warnings.append(
                f"model '{line.name}': whether Numerai lists a submission for round "
                f"{round_.number} could not be checked: {exc}"
            )
            continue
        if line.status is ModelStatus.ALREADY_SUBMITTED:
            if line.submission_id not in listed:
                line.warnings.append(
                    f"model '{line.name}': the ledger's submission {line.submission_id} is not "
                    f"among those Numerai lists for round {round_.number}"
                )
        elif (counted := _counted(listed, round_)) is not None:
            line.status = ModelStatus.ALREADY_SUBMITTED
            line.submission = SubmissionState.EXISTS
            line.submission_id = counted.id
            line.warnings.append(_counted_warning(line.name, counted, round_))


def _counted(listed: dict[str, ListedSubmission], round_: RoundInfo) -> ListedSubmission | None:
    """The latest submission Numerai counts for the round in its staking window, or None.

    Numerai lists a submission under the round it counts for (`round.number`), a late one of the
    round before included (queued). One made after this round's own staking close is not staked.
    """
    staked = [s for s in listed.values() if s.inserted_at < round_.close_time]
    return max(staked, key=lambda s: s.inserted_at, default=None)


def _counted_warning(name: str, counted: ListedSubmission, round_: RoundInfo) -> str:
    """What the line says of a submission Numerai counts but the ledger does not have for the round."""
    if counted.inserted_at < round_.open_time:
        return (
            f"model '{name}': Numerai counts for round {round_.number} a late submission of the "
            f"round before, queued into this one ({counted.id})"
        )
    # The trigger id says which webhook call (this app's or another tool's) made it, when one did.
    trigger = f" (trigger {counted.trigger_id})" if counted.trigger_id else ""
    return (
        f"model '{name}': Numerai lists a submission for round {round_.number} that this app did not "
        f"make{trigger}"
    )
