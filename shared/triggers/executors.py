"""The trigger layer's choice of where a run's models are worked on (MODEL_EXECUTION)."""

from __future__ import annotations

from shared.executors.base import Executor
from shared.report import Execution
from shared.settings import Settings


def executor_for(settings: Settings) -> Executor:
    """The local executor, or the queue executor for MODEL_EXECUTION=queue (its client loads only then)."""
    if settings.model_execution is Execution.QUEUE:
        from shared.executors.queue.fanout import QueueExecutor

        return QueueExecutor()
    from shared.executors.local import LocalExecutor

    return LocalExecutor()
