"""The run report: what one run did, kept in Blob Storage and returned by the HTTP test run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from shared.redaction import redact

# What a run id looks like (shared.run.job makes them): it names the run's blobs, so nothing else may.
RUN_ID_PATTERN = r"\d{8}T\d{6,12}Z-(scheduled|test)-[0-9a-f]{8}"
# Any message of ours fits; the bound keeps an input (a huge file name, say) from making a report large.
MAX_TEXT_CHARS = 2000
E = TypeVar("E", bound=Enum)


class Mode(str, Enum):
    """Scheduled runs upload; test runs do everything else."""

    SCHEDULED = "scheduled"
    TEST = "test"


class Execution(str, Enum):
    """Where a run predicts its models (MODEL_EXECUTION)."""

    LOCAL = "local"  # every model on this instance, one worker process each
    QUEUE = "queue"  # one Storage-queue task per model, spread over instances by the Functions host


class RunStatus(str, Enum):
    """How a run ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NOTHING_TO_DO = "nothing_to_do"  # no round open, or every model already submitted
    LOCKED = "locked"  # another run held the lock throughout this run's wait: it did nothing
    FAILED = "failed"


class ModelStatus(str, Enum):
    """How a run ended for one model."""

    PENDING = "pending"
    SUBMITTED = "submitted"  # uploaded and confirmed by Numerai
    VALIDATED = "validated"  # test mode: would have been uploaded
    ALREADY_SUBMITTED = "already_submitted"  # in the ledger for this round; skipped
    PREDICTED = (
        "predicted"  # `submit: false` in the manifest: predicted for its ensembles, never uploaded
    )
    SKIPPED = "skipped"  # `submit: false`, and no ensemble to submit this run needs it
    MISSED = "missed"  # the round's staking closed without a submission of it (SUBMIT_LATE off): archived only
    GATED = "gated"  # held back by the benchmark check (min_benchmark_corr, max_benchmark_corr_drop): archived, not uploaded
    FAILED = "failed"


# The statuses that fail a run: a gated model was not submitted, which its owner must hear about.
FAILING = (ModelStatus.FAILED, ModelStatus.GATED, ModelStatus.MISSED)


class SubmissionState(str, Enum):
    """Whether Numerai has a submission of the model for the run's round, as far as the run knows."""

    EXISTS = "exists"  # this run's or an earlier run's, confirmed by Numerai
    NONE = "none"  # none was made
    UNKNOWN = (
        "unknown"  # Numerai was asked but never answered; the next run checks before submitting
    )


@dataclass
class ModelReport:
    """One model's line in the report."""

    name: str
    status: ModelStatus = ModelStatus.PENDING
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    submission_id: str | None = None
    predictions_blob: str | None = None
    from_archive: bool = False  # predictions reused from an earlier run of this round
    peak_memory_mb: float = 0.0  # the model's worker process at its largest
    submission: SubmissionState = SubmissionState.NONE
    warnings: list[str] = field(default_factory=list)  # worth knowing, not failures
    # Rank correlation with the round's benchmark predictions (BENCHMARK_MODEL), and its median
    # over the model's recent rounds, from the archive: a sudden fall means wrong inputs.
    benchmark_corr: float | None = None
    benchmark_corr_median: float | None = None
    # The benchmark column compared with: BENCHMARK_MODEL, or the model's data version's.
    benchmark_model: str | None = None
    notes: list[str] = field(
        default_factory=list
    )  # worth knowing, not a problem (a stand-in benchmark)
    data_version: str | None = (
        None  # the Numerai data version the model predicted from (None: an ensemble)
    )
    # A failed model's last printed lines (its worker's log, redacted, at most 20 lines and 4 KB),
    # as Numerai's runner shows a model's execution log.
    output: list[str] = field(default_factory=list)
    # Fields this version does not know (a newer version's report): kept, and written back as they were.
    unknown: dict = field(default_factory=dict, repr=False)

    def fail(self, error: str) -> None:
        """Mark the model failed with a message for the user."""
        self.status = ModelStatus.FAILED
        self.error = cut(error)

    def miss(self, reason: str) -> None:
        """Mark the model missed: the round closed for staking before it was submitted."""
        self.status = ModelStatus.MISSED
        self.error = cut(reason)

    def hold_back(self, reason: str) -> None:
        """Mark the model gated: its predictions are archived but not uploaded, for `reason`."""
        self.status = ModelStatus.GATED
        self.error = cut(reason)

    def redact(self) -> None:
        """Redact every text in the line (see shared.redaction), before it leaves the process."""
        _redact_texts(self)

    def to_json(self) -> str:
        """The line as JSON (enums as their values)."""
        return json.dumps(_as_dict(self), default=lambda v: v.value, indent=2)

    @classmethod
    def from_dict(cls, raw: dict) -> ModelReport:
        """A line read back from its JSON object; a newer version's fields and statuses are kept as they are."""
        known, unknown = _split(cls, raw)
        return cls(
            **{
                **known,
                "status": as_is(ModelStatus, raw["status"]),
                "submission": as_is(SubmissionState, raw.get("submission", SubmissionState.NONE)),
            },
            unknown=unknown,
        )


@dataclass
class RunReport:
    """Everything a user needs to know about one run."""

    run_id: str
    mode: Mode
    started_at: str
    status: RunStatus = RunStatus.RUNNING
    finished_at: str | None = None
    reason: str | None = None
    round_number: int | None = None
    round_open_time: str | None = None
    round_close_time: str | None = None
    data_version: str | None = None
    past_due: bool = False
    trigger_id: str | None = (
        None  # Numerai's, when its webhook started the run; passed to create_submission
    )
    execution: Execution = Execution.LOCAL  # QUEUE when the models ran as queue tasks
    # The run that came after the round's staking closed, and checked with Numerai what it lists.
    after_window: bool = False
    models: list[ModelReport] = field(default_factory=list)
    report_blob: str | None = None
    notes: list[str] = field(default_factory=list)  # worth knowing once per run, not failures
    # Fields this version does not know (a newer version's report): kept, and written back as they were.
    unknown: dict = field(default_factory=dict, repr=False)

    @property
    def fanned_out(self) -> bool:
        """True while the run's models are queue tasks still at work: their last one finishes the report."""
        return self.execution is Execution.QUEUE and self.status is RunStatus.RUNNING

    @property
    def failed(self) -> bool:
        """True if the run could not run or any model failed."""
        return self.status is RunStatus.FAILED

    def model(self, name: str) -> ModelReport:
        """The line of the named model."""
        return next(m for m in self.models if m.name == name)

    def finish(self, reason: str | None = None) -> None:
        """Close the report: its status follows from the models unless the run already failed."""
        self.finished_at = utc_now()
        if self.status is not RunStatus.RUNNING:
            return
        if any(m.status in FAILING for m in self.models):
            self.status = RunStatus.FAILED
            self.reason = reason or cut(self._failures())
        elif all(m.status is ModelStatus.ALREADY_SUBMITTED for m in self.models):
            self.status = RunStatus.NOTHING_TO_DO
            self.reason = reason or "every model is already submitted for this round"
        else:
            self.status = RunStatus.SUCCEEDED
            self.reason = reason or self.reason

    def _failures(self) -> str:
        failed = [m.name for m in self.models if m.status is ModelStatus.FAILED]
        gated = [m.name for m in self.models if m.status is ModelStatus.GATED]
        missed = [m.name for m in self.models if m.status is ModelStatus.MISSED]
        parts = (
            [f"{len(failed)} of {len(self.models)} models failed: {', '.join(failed)}"]
            if failed
            else []
        )
        if gated:
            parts.append(f"{len(gated)} held back by the benchmark check: {', '.join(gated)}")
        if missed:
            parts.append(f"{len(missed)} missed the round's staking window: {', '.join(missed)}")
        return "; ".join(parts)

    def fail(self, reason: str) -> None:
        """End the run as failed for a reason that is not one model's.

        Models the run had not finished with say so, so that every line has its reason.
        """
        self.status = RunStatus.FAILED
        self.reason = cut(reason)
        self.finished_at = utc_now()
        for model in self.models:
            if model.status is ModelStatus.PENDING:
                model.fail(f"not finished: {reason}")

    def redact(self) -> None:
        """Redact every text in the report (see shared.redaction), before the report leaves the process."""
        _redact_texts(self)
        for model in self.models:
            model.redact()

    def to_json(self) -> str:
        """The report as JSON (enums as their values)."""
        report = _as_dict(self)
        report["models"] = [_as_dict(m) for m in self.models]
        return json.dumps(report, default=lambda v: v.value, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunReport:
        """A report read back from its JSON; a newer version's fields and statuses are kept as they are.

        ValueError, TypeError or KeyError if it is no run report.
        """
        raw = json.loads(text)
        known, unknown = _split(cls, raw)
        return cls(
            **{
                **known,
                "mode": as_is(Mode, raw["mode"]),
                "status": as_is(RunStatus, raw["status"]),
                "models": [ModelReport.from_dict(m) for m in raw["models"]],
                "execution": as_is(Execution, raw.get("execution", Execution.LOCAL)),
            },
            unknown=unknown,
        )

    def summary(self) -> str:
        """A few lines for a person: the run, then one line per model."""
        head = f"{self.mode.value} run {self.run_id}: {self.status.value}"
        if self.round_number is not None:
            head += f" (round {self.round_number}, data {self.data_version})"
        lines = [head]
        if self.reason:
            lines.append(f"  {self.reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        for m in self.models:
            detail = m.error or (
                f"submission {m.submission_id}" if m.submission_id else m.predictions_blob or ""
            )
            lines.append(
                f"  {m.name:<24} {m.status.value:<18} {m.rows:>7} rows {m.seconds:7.2f} s "
                f"{m.peak_memory_mb:6.0f} MiB  {detail}"
            )
            lines.extend(f"    warning: {w}" for w in m.warnings)
            lines.extend(f"    | {printed}" for printed in m.output)
        return "\n".join(lines)


def worked_on(planned: ModelReport, done: ModelReport) -> ModelReport:
    """A model's line once an executor worked on it: its own, after the warnings planning gave it."""
    done.warnings = [*planned.warnings, *done.warnings]
    return done


def as_is(kind: type[E], value: object) -> E:
    """`kind`'s member of `value`; for a text this version does not know, a member of that text.

    So a newer version's status reads, shows and writes back as it is, and equals none of ours.
    """
    try:
        return kind(value)
    except ValueError:
        if not isinstance(value, str):
            raise
    member = str.__new__(kind, value)  # type: ignore[call-overload]
    member._name_ = member._value_ = value
    return member


def _split(kind: type, raw: dict) -> tuple[dict, dict]:
    """`raw`'s fields that `kind` has, and the others."""
    names = {spec.name for spec in fields(kind)} - {"unknown"}
    return (
        {k: v for k, v in raw.items() if k in names},
        {k: v for k, v in raw.items() if k not in names},
    )


def _as_dict(item: RunReport | ModelReport) -> dict:
    """The item's fields, then the unknown ones it was read with, as they were."""
    known = {spec.name: getattr(item, spec.name) for spec in fields(item) if spec.name != "unknown"}
    return {**known, **{k: v for k, v in item.unknown.items() if k not in known}}


def _redact_texts(item: RunReport | ModelReport) -> None:
    for spec in fields(item):
        value = getattr(item, spec.name)
        if type(value) is str:  # not the str-valued enums
            setattr(item, spec.name, redact(value))
        elif isinstance(value, list) and all(type(text) is str for text in value):
            setattr(item, spec.name, [redact(text) for text in value])


def cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text`, or its first `limit` characters and a note of how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} characters cut)"


def utc_now() -> str:
    """The current time as ISO 8601 in UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")
