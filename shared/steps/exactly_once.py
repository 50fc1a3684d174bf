"""Submitting a model's predictions to Numerai exactly once, wherever a run fails or stops.

`create_submission` is the one call that must not be repeated: asked twice,
Numerai keeps two submissions. So a submission goes in steps, each safe to
stop after:

1. upload the CSV (`submission_upload_auth`, then a PUT); Numerai names the upload;
2. write an intent (round, model, that filename) beside the ledger;
3. confirm that this run still holds the run lock;
4. call `create_submission` once, never retried;
5. an id comes back: record it in the ledger. Any failure (no answer, a 5xx, a
   refusal): look for the filename among the model's submissions; listed means
   it exists, and is recorded; not listed after a refusal means none exists;
   not listed after no answer stays unknown, with the intent kept for the next run;
6. clear the intent.

A run that finds an intent without a ledger entry (its predecessor stopped
between 2 and 6, or never heard back) reconciles first: it looks for the
filename at Numerai, records what it finds, and submits only if Numerai lists
nothing and the intent is older than LIST_LAG_SECONDS (Numerai's list may not
show a submission it has just created). If it cannot look, it does not submit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import (
    AppError,
    NumeraiApiError,
    NumeraiKeysRefused,
    NumeraiUnanswered,
    StorageError,
    SubmissionUnknown,
)
from shared.numerai_client import NumeraiClient
from shared.report import SubmissionState, utc_now
from shared.storage.ledger import Ledger, SubmissionIntent, SubmissionRecord

log = logging.getLogger(__name__)

# How long after an intent a run still takes "not listed" to mean "not listed yet". No public
# source says how soon Numerai's `submissions` shows a submission `create_submission` made, and
# no lag has been measured here; issue #21 saw a model submitted twice when the next attempt
# asked too soon. Five minutes is five times NUMERAI_TIMEOUT_SECONDS' default (the longest a
# create_submission is waited for), yet leaves most of a one-hour staking window to submit in.
LIST_LAG_SECONDS = 300


@dataclass
class SubmitResult:
    """What became of one model's submission: whether it exists, and what the report says."""

    state: SubmissionState
    submission_id: str | None = None
    error: str | None = None  # set when the model's line must fail
    warnings: list[str] = field(default_factory=list)


@dataclass
class Submitter:
    """Submits for one run and round; `confirm_lock` raises LockLost once the run lost its lock."""

    numerai: NumeraiClient
    ledger: Ledger
    round_number: int
    run_id: str
    confirm_lock: Callable[[], None]
    trigger_id: str | None = None  # Numerai's webhook call's, passed on to create_submission

    def existing(self, model_name: str, model_id: str) -> str | None:
        """The id of the model's submission for the round that an earlier run made, or None.

        Raises SubmissionUnknown when an earlier run may have submitted and Numerai
        cannot be asked; StorageError when the ledger cannot be read.
        """
        record = self.ledger.submission_for(self.round_number, model_name)
        if record is not None:
            # One call, whether or not a run stopped between recording and clearing its intent.
            self._forget(model_name)
            return record.submission_id
        intent = self.ledger.intent_for(self.round_number, model_name)
        if intent is None:
            return None
        try:
            found = self.numerai.find_submission(intent.model_id, intent.filename)
        except NumeraiApiError as exc:
            raise SubmissionUnknown(
                f"model '{model_name}': run {intent.run_id} asked Numerai to submit '{intent.filename}' "
                f"and never recorded the answer; Numerai's submissions could not be checked ({exc}), "
                "so it is not submitted again. The next run checks again"
            ) from None
        if found is None and (until := _listed_by(intent)) is not None:
            raise SubmissionUnknown(
                f"model '{model_name}': run {intent.run_id} asked Numerai to submit '{intent.filename}' "
                "and never recorded the answer, and Numerai does not list it yet; its list may lag "
                f"behind create_submission, so the model is not submitted again before {until:%H:%M:%S} "
                f"UTC ({LIST_LAG_SECONDS // 60} min after it was asked). A run after that submits it "
                "if Numerai still lists nothing"
            )
        if found is None:
            log.info(
                "model %s: run %s's submission of '%s' never happened; submitting anew",
                model_name,
                intent.run_id,
                intent.filename,
            )
            self._forget(intent.model_name)
            return None
        log.warning(
            "model %s: run %s submitted '%s' as %s but stopped before recording it; recorded now",
            model_name,
            intent.run_id,
            intent.filename,
            found,
        )
        self._record(model_name, intent.model_id, found)
        return found

    def submit(self, model_name: str, model_id: str, csv_path: Path) -> SubmitResult:
        """Upload and submit `csv_path` for the model. LockLost propagates: the run must stop;
        so does NumeraiKeysRefused before anything was uploaded: no other model's upload can work."""
        self.confirm_lock()
        try:
            filename = self.numerai.upload(model_name, model_id, csv_path)
            self.ledger.record_intent(
                SubmissionIntent(
                    self.round_number, model_name, model_id, filename, self.run_id, utc_now()
                )
            )
        except NumeraiKeysRefused:
            raise
        except AppError as exc:
            return SubmitResult(SubmissionState.NONE, error=_about(model_name, exc))
        self.confirm_lock()
        try:
            submission_id = self.numerai.create_submission(model_id, filename, self.trigger_id)
        except NumeraiApiError as exc:
            return self._after_failure(model_name, model_id, filename, exc)
        return self._after_created(model_name, model_id, filename, submission_id)

    def _after_failure(
        self, model_name: str, model_id: str, filename: str, exc: NumeraiApiError
    ) -> SubmitResult:
        """Settle a create_submission that failed: Numerai's list of submissions decides."""
        # Even a refusal is checked: an answer that is not what it seems (a proxy's page, an
        # oversized body) must not make a submission that exists look like none.
        try:
            found = self.numerai.find_submission(model_id, filename)
        except NumeraiApiError as listing:
            return SubmitResult(
                SubmissionState.UNKNOWN,
                error=(
                    f"model '{model_name}': {exc}, and its submissions could not be listed ({listing}); "
                    "whether it was submitted is unknown. The next run checks before submitting again"
                ),
            )
        if found is not None:
            log.warning(
                "model %s: create_submission failed (%s), but Numerai lists the upload as %s",
                model_name,
                exc,
                found,
            )
            return self._recorded(
                model_name,
                model_id,
                found,
                [f"model '{model_name}': {exc}; Numerai lists the upload, as submission {found}"],
            )
        if isinstance(exc, NumeraiUnanswered):
            # Numerai may still be working on the request: the intent stays for the next run.
            return SubmitResult(
                SubmissionState.UNKNOWN,
                error=(
                    f"model '{model_name}': {exc}, and Numerai does not list the upload '{filename}' (yet); "
                    "the next run checks again before submitting"
                ),
            )
        self._forget(model_name)
        return SubmitResult(SubmissionState.NONE, error=_about(model_name, exc))

    def _after_created(
        self, model_name: str, model_id: str, filename: str, submission_id: str
    ) -> SubmitResult:
        warnings = []
        try:
            listed = self.numerai.find_submission(model_id, filename)
        except NumeraiApiError as exc:
            log.warning(
                "model %s: could not list its submissions to check %s: %s",
                model_name,
                submission_id,
                exc,
            )
            warnings.append(
                f"model '{model_name}': Numerai created submission {submission_id}; its submissions "
                f"could not be listed to confirm it ({exc})"
            )
        else:
            if listed != submission_id:
                # Numerai answered with the id, so the submission exists; its list may lag behind.
                warnings.append(
                    f"model '{model_name}': Numerai created submission {submission_id} "
                    "but did not list it when asked"
                )
        return self._recorded(model_name, model_id, submission_id, warnings)

    def _recorded(
        self, model_name: str, model_id: str, submission_id: str, warnings: list[str]
    ) -> SubmitResult:
        try:
            self._record(model_name, model_id, submission_id)
        except StorageError as exc:
            # The intent stays, so the next run finds the submission at Numerai instead of submitting again.
            return SubmitResult(
                SubmissionState.EXISTS,
                submission_id,
                warnings=warnings,
                error=(
                    f"model '{model_name}': submitted as {submission_id}, but the ledger could not record it "
                    f"({exc}); the next run finds it at Numerai and does not submit again"
                ),
            )
        return SubmitResult(SubmissionState.EXISTS, submission_id, warnings=warnings)

    def _record(self, model_name: str, model_id: str, submission_id: str) -> None:
        self.ledger.record(
            SubmissionRecord(
                round_number=self.round_number,
                model_name=model_name,
                model_id=model_id,
                submission_id=submission_id,
                submitted_at=utc_now(),
            )
        )
        self._forget(model_name)

    def _forget(self, model_name: str) -> None:
        # Harmless if it stays: the next run would look at Numerai, find nothing new, and go on.
        try:
            self.ledger.clear_intent(self.round_number, model_name)
        except StorageError as exc:
            log.warning("model %s: could not clear its submission intent: %s", model_name, exc)


def _listed_by(intent: SubmissionIntent) -> datetime | None:
    """When Numerai's list must show what the intent's create_submission made; None once past."""
    if not intent.written_at:
        return None
    try:
        written = datetime.fromisoformat(intent.written_at)
    except ValueError:
        return None  # a corrupt time: the intent is treated as old, as one without a time
    if written.tzinfo is None:
        written = written.replace(tzinfo=UTC)
    until = written + timedelta(seconds=LIST_LAG_SECONDS)
    return until if datetime.now(UTC) < until else None


def _about(model_name: str, exc: AppError) -> str:
    text = str(exc)
    return text if text.startswith(f"model '{model_name}'") else f"model '{model_name}': {text}"
