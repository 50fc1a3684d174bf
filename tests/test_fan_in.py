"""The queue executor's fan-in, as unit tests: which ensembles are released, when the last result
finishes the run, and what the run's deadline does to models without a result.

The results container is the in-memory FakeRunRecords (tests/fakes.py) and the queue a list;
publishing (page, telemetry) is replaced by a recorder. No Azurite, no queue, no workers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.executors.queue import fanin
from shared.executors.queue.messages import MODEL, TaskMessage
from shared.executors.queue.plan import FanOutPlan
from shared.manifest import ModelSpec
from shared.report import (
    Execution,
    Mode,
    ModelReport,
    ModelStatus,
    RunReport,
    RunStatus,
    SubmissionState,
)
from shared.storage import Results
from tests.fakes import ROUND, RUN_ID, World, model, world

SPECS = [model("a"), model("b"), model("e", members={"a": 1, "b": 1})]


class FakeQueue:
    """TaskQueue: the messages sent, and those deleted."""

    def __init__(self) -> None:
        self.sent: list[TaskMessage] = []
        self.deleted: list[tuple[str, str]] = []

    def send(self, message: TaskMessage, delay_seconds: float = 0) -> tuple[str, str]:
        self.sent.append(message)
        return f"message-{len(self.sent)}", "receipt"

    def delete(self, message_id: str, pop_receipt: str) -> None:
        self.deleted.append((message_id, pop_receipt))


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[RunReport]:
    """The reports fan-in publishes (the page and telemetry are not these tests' business)."""
    reports: list[RunReport] = []
    monkeypatch.setattr(fanin, "publish", lambda report, results, seconds: reports.append(report))
    return reports


def fanned_out(
    w: World, specs: list[ModelSpec] = SPECS, planned: dict[str, ModelReport] | None = None
) -> FanOutPlan:
    """A run fanned out over `specs`: its plan, and its running report with planning's lines."""
    now = datetime.now(UTC)
    plan = FanOutPlan(
        RUN_ID,
        Mode.SCHEDULED,
        ROUND,
        "v5.3",
        now.isoformat(),
        (now + timedelta(minutes=20)).isoformat(),
        {s.name: s.model_dump(mode="json") for s in specs},
        {s.name: f"id-{s.name}" for s in specs},
        deadline_message=["deadline-1", "r"],
    )
    report = RunReport(
        RUN_ID, Mode.SCHEDULED, now.isoformat(), execution=Execution.QUEUE, round_number=ROUND
    )
    report.models = [(planned or {}).get(s.name) or ModelReport(s.name) for s in specs]
    w.runs.write_report(RUN_ID, report.to_json())
    return plan


def result(
    w: World,
    plan: FanOutPlan,
    name: str,
    status: ModelStatus = ModelStatus.SUBMITTED,
    warnings: list[str] | None = None,
) -> None:
    """A task's result for one model, kept as its task keeps it."""
    line = ModelReport(name, status=status, warnings=warnings or [])
    assert fanin.keep_result(results_of(w), plan, line)


def saved(w: World) -> RunReport:
    return RunReport.from_json(w.runs.reports[RUN_ID][0])


def results_of(w: World) -> Results:
    return w.ctx.results


def test_the_first_result_of_a_model_stands() -> None:
    w = world()
    plan = fanned_out(w)
    assert fanin.keep_result(results_of(w), plan, ModelReport("a", status=ModelStatus.SUBMITTED))
    failed = ModelReport("a")
    failed.fail("model 'a': its task was delivered 5 times")
    assert not fanin.keep_result(results_of(w), plan, failed)  # a redelivery's, or the poison's
    kept = w.runs.task_result(RUN_ID, "a")
    assert kept is not None
    assert ModelReport.from_dict(json.loads(kept)).status is ModelStatus.SUBMITTED


def test_an_ensemble_is_released_once_when_all_its_members_have_results(
    published: list[RunReport],
) -> None:
    w = world()
    plan = fanned_out(w)
    queue = FakeQueue()
    result(w, plan, "a")
    assert fanin.finish_if_complete(results_of(w), plan, queue) is None  # b has no result yet
    assert queue.sent == []
    result(w, plan, "b", ModelStatus.FAILED)  # whatever a member's result, the ensemble hears of it
    assert fanin.finish_if_complete(results_of(w), plan, queue) is None  # e itself is still out
    assert fanin.finish_if_complete(results_of(w), plan, queue) is None
    assert [(m.kind, m.model, m.entry_digest) for m in queue.sent] == [
        (MODEL, "e", SPECS[2].digest())
    ]  # sent once, by the first task to find it ready
    assert saved(w).status is RunStatus.RUNNING and published == []


def test_the_last_result_finishes_the_run_once(published: list[RunReport]) -> None:
    w = world()
    plan = fanned_out(w)
    queue = FakeQueue()
    result(w, plan, "a")
    result(w, plan, "b")
    result(w, plan, "e", ModelStatus.FAILED)
    finished = fanin.finish_if_complete(results_of(w), plan, queue)
    assert finished is not None and finished.status is RunStatus.FAILED
    assert finished.reason == "1 of 3 models failed: e"
    assert [(m.name, m.status) for m in saved(w).models] == [
        ("a", ModelStatus.SUBMITTED),
        ("b", ModelStatus.SUBMITTED),
        ("e", ModelStatus.FAILED),
    ]
    assert published == [finished] and queue.deleted == [("deadline-1", "r")]
    # A later task (a redelivery) finds the run finished and leaves it alone.
    assert fanin.finish_if_complete(results_of(w), plan, queue) is None and len(published) == 1


def test_a_report_replaced_meanwhile_is_left_to_the_task_that_replaced_it(
    published: list[RunReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world()
    plan = fanned_out(w)
    for name in ("a", "b", "e"):
        result(w, plan, name)
    monkeypatch.setattr(w.runs, "replace_report", lambda run_id, text, etag: False)
    assert fanin.finish_if_complete(results_of(w), plan, None) is None and published == []


def test_the_deadline_fails_every_model_without_a_result_and_finishes_the_run(
    published: list[RunReport],
) -> None:
    w = world()
    plan = fanned_out(w)
    result(w, plan, "a")
    finished = fanin.handle_deadline(results_of(w), plan)
    assert finished is not None and finished.status is RunStatus.FAILED
    lines = {m.name: m for m in finished.models}
    assert lines["a"].status is ModelStatus.SUBMITTED  # a result kept before the deadline stands
    for name in ("b", "e"):
        assert lines[name].status is ModelStatus.FAILED
        assert lines[name].error == (
            f"model '{name}': no result by the run's deadline ({plan.deadline}); its task was "
            "still queued or running (too few instances, or a model slower than the run allows?)"
        )


def test_fan_in_keeps_planning_warnings_as_the_local_run_does(published: list[RunReport]) -> None:
    w = world()
    warning = (
        f"model 'a': whether Numerai lists a submission for round {ROUND} could not be checked"
    )
    plan = fanned_out(w, [model("a")], planned={"a": ModelReport("a", warnings=[warning])})
    result(w, plan, "a", warnings=["from the task"])
    finished = fanin.finish_if_complete(results_of(w), plan, None)
    assert finished is not None
    assert finished.models[0].warnings == [warning, "from the task"]


class Killed(BaseException):
    """The instance stopping mid-call: nothing after this point of the task runs."""


def test_a_late_result_that_submitted_corrects_the_report_finished_at_the_deadline(
    published: list[RunReport],
) -> None:
    # Issue #21, item 4: a task past its deadline check still uploads; the deadline message
    # fails the model meanwhile. Numerai has the submission, so the report must say so.
    w = world()
    plan = fanned_out(w, SPECS[:2])
    result(w, plan, "a")
    assert fanin.handle_deadline(results_of(w), plan) is not None
    late = ModelReport(
        "b", status=ModelStatus.SUBMITTED, submission=SubmissionState.EXISTS, submission_id="s-b"
    )
    assert not fanin.keep_result(results_of(w), plan, late)  # the deadline's result came first
    corrected = saved(w)
    assert corrected.status is RunStatus.SUCCEEDED
    b = {m.name: m for m in corrected.models}["b"]
    assert (b.status, b.submission, b.submission_id) == (
        ModelStatus.SUBMITTED,
        SubmissionState.EXISTS,
        "s-b",
    )
    assert b.warnings == [
        f"model 'b': its task finished after the run's deadline ({plan.deadline}) had failed it; "
        "Numerai has its submission, so the report was corrected"
    ]
    assert [r.status for r in published] == [RunStatus.FAILED, RunStatus.SUCCEEDED]
    # A late result that submitted nothing changes nothing.
    assert not fanin.keep_result(results_of(w), plan, ModelReport("a", status=ModelStatus.FAILED))
    assert len(published) == 2


def test_a_run_whose_finisher_died_before_its_record_is_recorded_by_the_next_delivery(
    published: list[RunReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #21, item 7: the final report was written, then the instance died before the
    # telemetry record (the alert) and before deleting the deadline message.
    w = world()
    plan = fanned_out(w)
    queue = FakeQueue()
    for name in ("a", "b", "e"):
        result(w, plan, name, ModelStatus.FAILED)

    def dies(report: RunReport, results: Results, seconds: float) -> None:
        raise Killed

    recorder = fanin.publish
    monkeypatch.setattr(fanin, "publish", dies)
    with pytest.raises(Killed):
        fanin.finish_if_complete(results_of(w), plan, queue)
    assert saved(w).status is RunStatus.FAILED and queue.deleted == []
    monkeypatch.setattr(fanin, "publish", recorder)
    again = fanin.finish_if_complete(results_of(w), plan, queue)  # the task's redelivery
    assert again is not None and again.status is RunStatus.FAILED
    assert [r.run_id for r in published] == [RUN_ID] and queue.deleted == [("deadline-1", "r")]
    assert fanin.finish_if_complete(results_of(w), plan, queue) is None  # recorded once
    assert fanin.handle_deadline(results_of(w), plan) is None and len(published) == 1


def test_an_ensemble_whose_releaser_died_before_sending_is_sent_by_its_redelivery(
    published: list[RunReport],
) -> None:
    # Issue #21, item 8: the release mark was created, then the instance died before the send.
    w = world()
    plan = fanned_out(w)
    result(w, plan, "a")
    result(w, plan, "b")

    class DyingQueue(FakeQueue):
        def send(self, message: TaskMessage, delay_seconds: float = 0) -> tuple[str, str]:
            raise Killed

    with pytest.raises(Killed):
        fanin.finish_if_complete(results_of(w), plan, DyingQueue(), by="b")
    queue = FakeQueue()
    assert fanin.finish_if_complete(results_of(w), plan, queue, by="a") is None
    assert queue.sent == []  # a's task cannot tell a dead releaser from one about to send
    assert fanin.finish_if_complete(results_of(w), plan, queue, by="b") is None  # b's redelivery
    assert [(m.kind, m.model) for m in queue.sent] == [(MODEL, "e")]
    assert fanin.finish_if_complete(results_of(w), plan, queue, by="b") is None
    assert len(queue.sent) == 1  # sent once it is marked sent


@pytest.mark.parametrize(
    ("submit_late", "b_status", "checked"),
    [
        (True, ModelStatus.FAILED, False),  # a later run may still submit b late
        (True, ModelStatus.SUBMITTED, True),
        (False, ModelStatus.FAILED, True),  # nothing is uploaded after the close: final
    ],
)
def test_a_fanned_out_run_after_the_close_marks_the_round_checked_once_its_outcome_is_final(
    published: list[RunReport], submit_late: bool, b_status: ModelStatus, checked: bool
) -> None:
    # Issue #21, item 5, in queue mode: the run that finishes the report decides the mark.
    w = world()
    plan = fanned_out(w, SPECS[:2])
    plan.submit_late = submit_late
    running = saved(w)
    running.after_window = True
    w.runs.write_report(RUN_ID, running.to_json())
    result(w, plan, "a")
    result(w, plan, "b", b_status)
    assert fanin.finish_if_complete(results_of(w), plan, None) is not None
    assert w.runs.window_checked_by(ROUND) == (RUN_ID if checked else None)
