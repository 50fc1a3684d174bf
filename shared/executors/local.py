"""Local execution: every model on this instance, each in a worker forked by the process's warm pool."""

from __future__ import annotations

from shared.executors.run_folder import remove_stale_folders, run_folder
from shared.manifest import ModelSpec
from shared.report import RunReport
from shared.steps.context import RoundContext
from shared.steps.models import ModelResults, process_models
from shared.steps.round_data import run_fetchers


class LocalExecutor:
    """MODEL_EXECUTION=local: the run's own process supervises every model's worker."""

    def execute(
        self,
        ctx: RoundContext,
        pending: list[ModelSpec],
        account: dict[str, str],
        report: RunReport,
    ) -> ModelResults:
        """Predict, check, archive and (scheduled) upload `pending` in a work folder of the run's own."""
        rounds = ctx.settings.work_dir / "rounds"
        remove_stale_folders(rounds)
        with run_folder(rounds, ctx.run_id) as folder:
            return process_models(
                ctx,
                pending,
                account,
                folder,
                run_fetchers(ctx.services.numerai, folder, ctx.round_number),
                elsewhere={line.name: line for line in report.models},
            )
