"""The submission ledger: each model's confirmed submission per round, and the intents before them.

One blob per (round, model) rather than one ledger file: concurrent runs for
different models never read-modify-write the same blob, so none can lose
another's entry. An intent is written before `create_submission` is called and
cleared once the outcome is known (see shared/steps/exactly_once.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta

from shared.errors import StorageError
from shared.storage.container import JSON, Container, segment


@dataclass(frozen=True)
class SubmissionRecord:
    """One model's confirmed submission for one round."""

    round_number: int
    model_name: str
    model_id: str
    submission_id: str
    submitted_at: str  # ISO 8601, UTC

    def __post_init__(self) -> None:
        if type(self.round_number) is not int or self.round_number < 0:
            raise ValueError(f"round_number must be an integer >= 0, not {self.round_number!r}")
        for name in ("model_name", "model_id", "submission_id", "submitted_at"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        try:
            offset = datetime.fromisoformat(self.submitted_at).utcoffset()
        except ValueError:
            raise ValueError(f"submitted_at is not ISO 8601: {self.submitted_at!r}") from None
        if offset != timedelta(0):
            raise ValueError(f"submitted_at must be in UTC, not {self.submitted_at!r}")

    def to_json(self) -> str:
        """Serialise as a JSON object."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SubmissionRecord:
        """Parse `to_json` output; raises ValueError if it is not a valid record."""
        return cls(**_record_fields(cls, text, "a submission record"))


@dataclass(frozen=True)
class SubmissionIntent:
    """Written before `create_submission` is called: this run is about to submit `filename`.

    An intent without a ledger entry means a run stopped, or lost Numerai's answer,
    between asking Numerai to create the submission and recording it. The next run
    looks for `filename` among the model's submissions before it submits anything.
    """

    round_number: int
    model_name: str
    model_id: str
    filename: str  # as submission_upload_auth named the upload; create_submission refers to it
    run_id: str
    # ISO 8601, UTC; when create_submission was about to be asked. "" in an intent of an older
    # version, taken as long ago.
    written_at: str = ""

    def to_json(self) -> str:
        """Serialise as a JSON object."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SubmissionIntent:
        """Parse `to_json` output; raises ValueError if it is not a valid intent."""
        return cls(**_record_fields(cls, text, "a submission intent", optional={"written_at"}))


def _record_fields(
    cls: type, text: str, what: str, optional: frozenset[str] | set[str] = frozenset()
) -> dict[str, object]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")  # noqa: TRY004 - callers catch ValueError for corrupt records
    names = [f.name for f in fields(cls)]
    missing = [name for name in names if name not in data and name not in optional]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    return {name: data[name] for name in names if name in data}


class Ledger:
    """Confirmed submissions (`ledger/round-N/<model>.json`) and intents (`intents/round-N/<model>.json`)."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def record(self, record: SubmissionRecord) -> None:
        """Add (or replace) the ledger entry for the record's round and model."""
        self._container.upload(
            _ledger_name(record.round_number, record.model_name),
            record.to_json(),
            JSON,
            "ledger entry",
        )

    def submission_for(self, round_number: int, model_name: str) -> SubmissionRecord | None:
        """Return the recorded submission of a model for a round, or None."""
        name = _ledger_name(round_number, model_name)
        text = self._container.read_optional(name, "ledger entry")
        return None if text is None else self._parse_record(name, text)

    def records(self, round_number: int | None = None) -> list[SubmissionRecord]:
        """All recorded submissions, or one round's, sorted by round and model name."""
        # The trailing slash keeps round 1 from matching round-10, round-11, ...
        prefix = "ledger/" if round_number is None else f"ledger/round-{round_number:d}/"
        records = []
        for name in self._container.names(prefix, "ledger"):
            text = self._container.read_optional(name, "ledger entry")
            if text is not None:  # deleted since the listing
                records.append(self._parse_record(name, text))
        return sorted(records, key=lambda r: (r.round_number, r.model_name))

    def record_intent(self, intent: SubmissionIntent) -> None:
        """Note that `intent.filename` is about to be submitted (replacing an older intent)."""
        self._container.upload(
            _intent_name(intent.round_number, intent.model_name),
            intent.to_json(),
            JSON,
            "submission intent",
        )

    def intent_for(self, round_number: int, model_name: str) -> SubmissionIntent | None:
        """The intent a run left for a model and round, or None."""
        name = _intent_name(round_number, model_name)
        text = self._container.read_optional(name, "submission intent")
        if text is None:
            return None
        try:
            return SubmissionIntent.from_json(text)
        except (ValueError, TypeError) as exc:
            raise StorageError(
                f"submission intent '{name}' in container '{self._container.name}' is "
                f"corrupt: {exc}"
            ) from exc

    def clear_intent(self, round_number: int, model_name: str) -> None:
        """Remove a model's intent once its outcome is known (recorded, or known not to exist)."""
        self._container.delete_optional(_intent_name(round_number, model_name), "submission intent")

    def _parse_record(self, name: str, text: str) -> SubmissionRecord:
        try:
            return SubmissionRecord.from_json(text)
        except ValueError as exc:
            raise StorageError(
                f"ledger entry '{name}' in container '{self._container.name}' is corrupt: {exc}"
            ) from exc


def _ledger_name(round_number: int, model_name: str) -> str:
    return f"ledger/round-{round_number:d}/{segment(model_name, 'model name')}.json"


def _intent_name(round_number: int, model_name: str) -> str:
    return f"intents/round-{round_number:d}/{segment(model_name, 'model name')}.json"
