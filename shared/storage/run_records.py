"""What each run leaves behind: its report, and for a fanned-out run its plan, task results and marks.

- `reports/<run id>.json`: every run's report (a fanned-out run's is replaced once, by the task that finishes it);
- `runs/<run id>/plan.json`, `runs/<run id>/models/<model>.json`, `runs/<run id>/released/<model>`,
  `runs/<run id>/published`: queue mode;
- `rounds/round-N/window-checked.json`: the run that checked a round after its staking close;
- `webhooks/round-N/<model>.json` (`every-model.json` for a URL naming none): the one call of
  Numerai's webhook that queued the model's run in the round, with its trigger id.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from shared.storage.container import JSON, Container, segment

REPORTS = "reports/"
# The record of a webhook URL that names no model (an older version's); no model name has a '-'.
EVERY_MODEL = "every-model"


class RunRecords:
    """Reports, plans, task results and the marks that make fan-in and the window check happen once."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def write_report(self, run_id: str, report_json: str) -> str:
        """Store a run's report; returns the blob name."""
        name = _report_blob(run_id)
        self._container.upload(name, report_json, JSON, "report")
        return name

    def read_report(self, run_id: str) -> str:
        """Return a run's report; StorageError if there is none."""
        return self._container.read(_report_blob(run_id), "report")

    def find_report(self, run_id: str) -> str | None:
        """A run's report, or None if there is none."""
        return self._container.read_optional(_report_blob(run_id), "report")

    def read_report_for_update(self, run_id: str) -> tuple[str, str] | None:
        """A run's report and its ETag, for `replace_report`; None if there is none."""
        name = _report_blob(run_id)
        with self._container.errors(name, "read", "report"):
            download = self._container.download_optional(name)
            return None if download is None else (download.readall(), download.properties.etag)

    def replace_report(self, run_id: str, report_json: str, etag: str) -> bool:
        """Replace a run's report only if it is still the version `etag` names.

        False when another writer replaced it first: of the tasks that finish a
        fanned-out run together, exactly one writes the final report.
        """
        return self._container.replace_if_unchanged(
            _report_blob(run_id), report_json, etag, "report"
        )

    def report_ids(self) -> list[str]:
        """The run ids of every stored report, oldest first (run ids sort by start time)."""
        names = self._container.names(REPORTS, "reports")
        return sorted(
            name[len(REPORTS) : -len(".json")] for name in names if name.endswith(".json")
        )

    def write_plan(self, run_id: str, plan_json: str) -> None:
        """Store what a fanned-out run's tasks need: the round, the models and their manifest entries."""
        self._container.upload(_run_blob(run_id, "plan.json"), plan_json, JSON, "run plan")

    def read_plan(self, run_id: str) -> str | None:
        """A fanned-out run's plan, or None if the run wrote none."""
        return self._container.read_optional(_run_blob(run_id, "plan.json"), "run plan")

    def add_task_result(self, run_id: str, model_name: str, result_json: str) -> bool:
        """Keep one model's result of a fanned-out run, unless it already has one; True if this one was kept.

        First come, first kept: a redelivered task, its poison message and the run's
        deadline may each try to write the same model's result.
        """
        return self._container.create(_result_blob(run_id, model_name), result_json, "task result")

    def replace_task_result(self, run_id: str, model_name: str, result_json: str) -> None:
        """Overwrite a model's kept result: only a result that corrects it (fanin.keep_result) may."""
        self._container.upload(_result_blob(run_id, model_name), result_json, JSON, "task result")

    def task_result(self, run_id: str, model_name: str) -> str | None:
        """One model's result of a fanned-out run, or None while it has none."""
        return self._container.read_optional(_result_blob(run_id, model_name), "task result")

    def task_result_names(self, run_id: str) -> set[str]:
        """The models of a fanned-out run that have a result so far: one listing, no result read."""
        names = self._container.names(_run_blob(run_id, "models/"), "task results")
        return {PurePosixPath(name).stem for name in names}

    def task_results(self, run_id: str) -> dict[str, str]:
        """Every model result a fanned-out run has so far, by model name."""
        found = {}
        for name in self._container.names(_run_blob(run_id, "models/"), "task results"):
            text = self._container.read_optional(name, "task result")
            if text is not None:
                found[PurePosixPath(name).stem] = text
        return found

    def mark_released(self, run_id: str, model_name: str, by: str) -> bool:
        """Mark a fanned-out run's ensemble as being sent by the task of model `by`; True only for the first."""
        return self._container.create(
            _release_blob(run_id, model_name), json.dumps({"by": by, "sent": False}), "release mark"
        )

    def mark_sent(self, run_id: str, model_name: str, by: str) -> None:
        """Note that the ensemble's task message went to the queue: no later delivery sends it again."""
        self._container.upload(
            _release_blob(run_id, model_name),
            json.dumps({"by": by, "sent": True}),
            JSON,
            "release mark",
        )

    def unsent_release_by(self, run_id: str, model_name: str) -> str | None:
        """The task that marked the ensemble released but has not noted it sent, or None."""
        text = self._container.read_optional(_release_blob(run_id, model_name), "release mark")
        if text is None:
            return None
        try:
            mark = json.loads(text)
            return None if mark.get("sent", True) else str(mark["by"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # a mark of an older version ("{}"): taken as sent

    def mark_published(self, run_id: str) -> None:
        """Note that the finished run's report was published (page, telemetry): its alert is out."""
        self._container.upload(_run_blob(run_id, "published"), "{}", JSON, "published mark")

    def published(self, run_id: str) -> bool:
        """Whether the finished run's report was published."""
        return (
            self._container.read_optional(_run_blob(run_id, "published"), "published mark")
            is not None
        )

    def mark_window_checked(self, round_number: int, run_id: str) -> bool:
        """Note that `run_id` checked, after the round's staking close, what Numerai lists; True if first."""
        return self._container.create(
            _window_mark(round_number), json.dumps({"run_id": run_id}), "window check"
        )

    def window_checked_by(self, round_number: int) -> str | None:
        """The run that checked the round after its staking close, or None if none has yet."""
        text = self._container.read_optional(_window_mark(round_number), "window check")
        if text is None:
            return None
        try:
            return str(json.loads(text)["run_id"])
        except (ValueError, KeyError, TypeError):
            return "(unreadable)"

    def record_webhook_call(self, round_number: int, model: str | None, call_json: str) -> bool:
        """Record the call of Numerai's webhook that queues `model`'s run in the round; True only for the
        first, so that however many calls arrive, the round fans out once."""
        return self._container.create(_webhook_blob(round_number, model), call_json, "webhook call")

    def webhook_call(self, round_number: int, model: str | None) -> str | None:
        """The recorded webhook call of `model` in the round, or None: a run message's trigger id comes
        from here, never from the message."""
        return self._container.read_optional(_webhook_blob(round_number, model), "webhook call")

    def forget_webhook_call(self, round_number: int, model: str | None) -> None:
        """Remove a call's record whose run could not be queued, so that Numerai's next call queues it."""
        self._container.delete_optional(_webhook_blob(round_number, model), "webhook call")


def _webhook_blob(round_number: int, model: str | None) -> str:
    name = EVERY_MODEL if model is None else segment(model, "model name")
    return f"webhooks/round-{round_number:d}/{name}.json"


def _report_blob(run_id: str) -> str:
    return f"{REPORTS}{segment(run_id, 'run id')}.json"


def _run_blob(run_id: str, name: str) -> str:
    return f"runs/{segment(run_id, 'run id')}/{name}"


def _result_blob(run_id: str, model_name: str) -> str:
    return _run_blob(run_id, f"models/{segment(model_name, 'model name')}.json")


def _release_blob(run_id: str, model_name: str) -> str:
    return _run_blob(run_id, f"released/{segment(model_name, 'model name')}")


def _window_mark(round_number: int) -> str:
    return f"rounds/round-{round_number:d}/window-checked.json"
