"""Uploading a scheduled run's checked predictions, once the round is confirmed still open for them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from shared.errors import LockLost, NumeraiKeysRefused, RunDeadlinePassed
from shared.limits import free_disk_bytes
from shared.report import ModelReport, ModelStatus
from shared.steps.context import RoundContext
from shared.steps.predict import Prediction
from shared.steps.window import duration, missed_reason, staking_closed_for

log = logging.getLogger(__name__)

# Room kept beyond a CSV's own bytes: the filesystem's blocks and metadata, a log line.
UPLOAD_MARGIN_BYTES = 2**20
# Models named when the disk is short.
SHOWN_MODELS = 3


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
    free_bytes: Callable[[Path], int] = free_disk_bytes,
) -> Uploaded:
    """Submit every line still pending, exactly once each, if the round still takes them.

    Each CSV is written to `work_dir` only when `free_bytes` says the disk has room for it,
    and removed once submitted; a model whose CSV cannot be written fails alone.
    """
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
        csv_path = _write_csv(ctx, line, prediction.csv, work_dir, free_bytes, predictions)
        if csv_path is None:
            continue
        try:
            ctx.check_deadline(f"uploading model '{name}'")
            result = submitter.submit(name, account[name], csv_path)
        except (LockLost, RunDeadlinePassed) as exc:
            done.stopped = f"{exc}; the models not yet submitted are archived for the next run"
            return done
        except NumeraiKeysRefused as exc:
            # Said once, in the run's reason: every other model would be refused the same way.
            _keys_refused(done, predictions, exc)
            return done
        finally:
            with suppress(OSError):
                csv_path.unlink(missing_ok=True)  # submitted or not, archived: the next needs room
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


def _write_csv(
    ctx: RoundContext,
    line: ModelReport,
    csv: str,
    work_dir: Path,
    free_bytes: Callable[[Path], int],
    predictions: dict[str, Prediction],
) -> Path | None:
    """The model's upload CSV, written; None, the line failed saying why, when it cannot be."""
    data = csv.encode()
    needed = len(data) + UPLOAD_MARGIN_BYTES
    path = work_dir / f"{line.name}_round{ctx.round_number}.csv"
    archived = (
        f"Its predictions are archived ({line.predictions_blob}) and the next run submits them"
    )
    try:
        free = free_bytes(work_dir)
        if free >= needed:
            path.write_bytes(data)
            return path
    except OSError as exc:  # a disk that filled since the look, or a folder gone
        with suppress(OSError):
            path.unlink(missing_ok=True)  # a part written: the next model needs the room
        line.fail(
            f"model '{line.name}': not uploaded: its CSV could not be written ({exc}). {archived}"
        )
        return None
    line.fail(
        f"model '{line.name}': not uploaded for lack of disk space: its CSV needs "
        f"{_mib(needed)} in WORK_DIR ({ctx.settings.work_dir}) and {_mib(free)} is free; "
        f"{_space_holders(predictions)}. {archived} once WORK_DIR's disk has room"
    )
    return None


def _space_holders(predictions: dict[str, Prediction]) -> str:
    """The models after whose workers the disk's free space fell the most, in words.

    A worker's own folder is removed once it is read, so what a model still holds is what it
    wrote elsewhere. The figure is the fall of the free space while it ran: models running side
    by side, or another run on the instance, blur it.
    """
    fallen = sorted(
        ((p.outcome.disk_left_mb, name) for name, p in predictions.items()), reverse=True
    )
    named = [f"'{name}' {size:.1f} MiB" for size, name in fallen[:SHOWN_MODELS] if size >= 0.1]
    if not named:
        return "no model's worker left files outside its folder: something else filled the disk"
    return (
        "the models after whose workers the free space fell the most (files written outside "
        f"their folders are not removed): {', '.join(named)}"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _keys_refused(
    done: Uploaded, predictions: dict[str, Prediction], exc: NumeraiKeysRefused
) -> None:
    """Fail every line still to upload with a short line; the run's reason carries the refusal."""
    done.stopped = f"{exc}; no model was uploaded after the refusal, and each is archived"
    for name, line in done.lines.items():
        prediction = predictions.get(name)
        if line.status is ModelStatus.PENDING and prediction is not None and prediction.spec.submit:
            line.fail(
                f"model '{line.name}': not uploaded: Numerai refused the API keys (the run's reason "
                "says which setting to fix)"
            )


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
