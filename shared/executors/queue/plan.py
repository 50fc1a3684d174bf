"""A fanned-out run's plan: what its tasks share."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from shared.manifest import ModelSpec
from shared.report import Mode


@dataclass
class FanOutPlan:
    """What a fanned-out run's tasks share, kept beside its report as `runs/<run_id>/plan.json`."""

    run_id: str
    mode: Mode
    round_number: int
    data_version: str
    started_at: str  # ISO 8601, UTC
    deadline: str  # ISO 8601, UTC: no task starts an upload after it
    models: dict[str, dict] = field(default_factory=dict)  # name → its manifest entry, as planned
    account: dict[str, str] = field(default_factory=dict)  # model name → Numerai model id
    deadline_message: list[str] | None = None  # [id, pop receipt]: deleted once the run is finished
    trigger_id: str | None = None  # Numerai's webhook call's, for every task's create_submission
    # The lines the run decided before fanning out (a member not in the account, say): an ensemble's
    # task must see a member that failed there as the local run would.
    decided: dict[str, dict] = field(default_factory=dict)
    # SUBMIT_LATE when the run was planned: after the staking close, whether a failed model may
    # still be submitted by a later run (steps.window.settled), so the round is not yet checked.
    submit_late: bool = False

    def spec(self, name: str) -> ModelSpec:
        """The planned manifest entry of a model."""
        return ModelSpec.model_validate(self.models[name])

    def seconds_left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return (datetime.fromisoformat(self.deadline) - datetime.now(UTC)).total_seconds()

    def ends_at(self) -> float:
        """The deadline on this process's time.monotonic() clock."""
        return time.monotonic() + self.seconds_left()

    def to_json(self) -> str:
        """Serialise as a JSON object."""
        return json.dumps(asdict(self), default=lambda v: v.value, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FanOutPlan:
        """Parse `to_json` output."""
        raw = json.loads(text)
        return cls(**{**raw, "mode": Mode(raw["mode"])})
