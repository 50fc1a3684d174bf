"""What the run asks of an executor."""

from __future__ import annotations

from typing import Protocol

from shared.manifest import ModelSpec
from shared.report import RunReport
from shared.steps.context import RoundContext
from shared.steps.models import ModelResults


class Executor(Protocol):
    """Works on a run's pending models."""

    def execute(
        self,
        ctx: RoundContext,
        pending: list[ModelSpec],
        account: dict[str, str],
        report: RunReport,
    ) -> ModelResults | None:
        """Work on `pending` (members before their ensembles) and return each model's line.

        `report` is the run's report so far: the lines the run decided before (an ensemble
        needs to know a member failed), and what a fanned-out run saves as running.
        None when the models went to queue tasks, the last of which finishes the report.
        """
        ...
