"""Uploading a scheduled run's checked predictions, once the round is confirmed still open for them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from shared.errors import LockLost, RunDeadlinePassed
from shared.report import ModelReport, ModelStatus
from shared.steps.context import RoundContext
from shared.steps.predict import Prediction
from shared.steps.window import duration, missed_reason, staking_closed_for

log = logging.getLogger(__name__)


@dataclass
class Uploaded:
    """The lines after the upload step, and what it means for the whole run."""

    lines: dict[str, ModelReport]
    stopped: str | None = (
        None  # why uploads stopped (the lock lost, the deadline): the run fails with it
    )
    notes: list[str] = field(
        default_factory=list
    )  # for the run's reason (the round closed during the run)


def upload(
    ctx: RoundContext,
    lines: dict[str, ModelReport],
    predictions: dict[str, Prediction],
    account: dict[str, str],
    work_dir: Path,
) -> Uploaded:
    """Submit every line still pending, exactly once each, if the round still takes them."""
    done = Uploaded(dict(lines))
    if not any(line.status is ModelStatus.PENDING for line in done.lines.values()):
        return done  # nothing to upload: the round need not be asked about
    window = _round_still_current(ctx, done)
    if not window.allowed:
        return done
    submitter = ctx.submitter()
    for name, line in done.lines.items():
        prediction = predictions.get(name)
        if (
            line.status is not ModelStatus.PENDING
            or prediction is None
            or prediction.csv is None
            or not prediction.spec.submit
        ):
            continue
        csv_path = work_dir / f"{name}_round{ctx.round_number}.csv"
        csv_path.write_text(prediction.csv)
        try:
            ctx.check_deadline(f"uploading model '{name}'")
            result = submitter.submit(name, account[name], csv_path)
        except (LockLost, RunDeadlinePassed) as exc:
            done.stopped = f"{exc}; the models not yet submitted are archived for the next run"
            return done
        line.submission = result.state
        line.submission_id = result.submission_id
        line.warnings.extend(result.warnings)
        if result.error is not None:
            line.fail(result.error)
            continue
        line.status = ModelStatus.SUBMITTED
        if window.late_by is not None:
            line.warnings.append(
                f"model '{name}': submitted {duration(window.late_by)} after the staking close "
                "(SUBMIT_LATE=true): scored, not staked"
            )
        log.info(
            "model %s: submission %s confirmed for round %d",
            name,
            result.submission_id,
            ctx.round_number,
        )
    return done


@dataclass(frozen=True)
class _Window:
    """Whether the round still takes this run's uploads, and how late they are (None: in the staking window)."""

    allowed: bool
    late_by: timedelta | None = None


def _round_still_current(ctx: RoundContext, done: Uploaded) -> _Window:
    """Check the round again before uploading: predictions belong to the round they were made for,
    and after its staking close only SUBMIT_LATE uploads them.

    When nothing may be uploaded, the pending lines say why.
    """
    round_ = ctx.services.numerai.current_round()
    number = ctx.round_number
    pending = [line for line in done.lines.values() if line.status is ModelStatus.PENDING]
    if round_ is None or round_.number != number:
        now = "no round" if round_ is None else f"round {round_.number}"
        for line in pending:
            line.fail(
                f"model '{line.name}': round {number} ended during the run ({now} is current); "
                "its predictions are archived but were not uploaded"
            )
        return _Window(False)
    late = staking_closed_for(round_)
    if late is None:
        return _Window(True)
    if ctx.settings.submit_late:
        # Numerai still scores a late submission; it just cannot be staked.
        done.notes.append(
            f"round {number} closed for staking during the run; "
            "the submissions are late: scored, but not staked"
        )
        return _Window(True, late)
    for line in pending:
        line.miss(missed_reason(line.name, round_, late, line.predictions_blob))
    return _Window(False)
