"""Planning a run, as unit tests: the round decision, the manifest, which models still need
work, and how the run assembles its report from planning's lines and the model step's.

Every collaborator is an in-memory fake (tests/fakes.py): no Azurite, no Numerai sandbox,
no workers.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import ManifestError, NumeraiApiError
from shared.manifest import Manifest, ModelSpec
from shared.numerai_client import RoundInfo
from shared.report import Mode, ModelReport, ModelStatus, RunReport, RunStatus, SubmissionState
from shared.run.job import _assemble, _run, _Selection
from shared.run.planning import (
    ModelPlan,
    RoundDecision,
    _needed,
    _not_in_account,
    decide_round,
    newer_version_note,
    plan_models,
    read_manifest,
)
from shared.steps.models import ModelResults
from shared.storage.ledger import SubmissionIntent
from tests.fakes import ROUND, RUN_ID, World, closed_round, model, open_round, world

ACCOUNT = {"a": "id-a", "b": "id-b"}
STARTED = "2026-12-03T00:00:00+00:00"
STOPPED = "the lock was lost; the models not yet submitted are archived for the next run"


def manifest(*specs: ModelSpec) -> Manifest:
    return Manifest(models=list(specs))


def statuses(lines: dict[str, ModelReport]) -> dict[str, ModelStatus]:
    return {name: line.status for name, line in lines.items()}


# decide_round


def test_no_round_means_nothing_to_do() -> None:
    w = world()
    decision = decide_round(w.ctx.services, Mode.SCHEDULED, None)
    assert decision == RoundDecision(None, False, "Numerai reports no current round")


def test_an_open_round_goes_on_without_a_reason() -> None:
    w = world()
    round_ = open_round()
    assert decide_round(w.ctx.services, Mode.SCHEDULED, round_) == RoundDecision(round_, True)


def test_a_test_run_goes_on_with_a_closed_round_and_says_so() -> None:
    w = world()
    decision = decide_round(w.ctx.services, Mode.TEST, closed_round())
    assert decision.goes_on and not decision.after_window
    assert decision.reason is not None
    assert f"round {ROUND} is not open for submissions" in decision.reason
    assert decision.reason.endswith("; the test run used its data")


@pytest.mark.parametrize(
    ("submit_late", "policy"),
    [
        (False, "is archived, not uploaded (SUBMIT_LATE=false)"),
        (True, "late submissions are scored but not staked (SUBMIT_LATE=true)"),
    ],
)
def test_the_first_scheduled_run_after_the_staking_close_goes_on_after_the_window(
    submit_late: bool, policy: str
) -> None:
    w = world(submit_late=submit_late)
    closed = closed_round(closed_ago=timedelta(minutes=45))
    decision = decide_round(w.ctx.services, Mode.SCHEDULED, closed)
    assert decision.goes_on and decision.after_window
    assert decision.reason == f"round {ROUND} closed for staking 45 min ago; " + (
        "what was not submitted in the window " + policy if not submit_late else policy
    )


def test_a_round_whose_window_was_checked_is_left_alone() -> None:
    w = world()
    w.runs.window_checked[ROUND] = "earlier-run"
    decision = decide_round(w.ctx.services, Mode.SCHEDULED, closed_round())
    assert not decision.goes_on and not decision.after_window
    assert decision.reason is not None
    assert decision.reason.endswith(
        "; run earlier-run already checked what Numerai lists for it; "
        "nothing was downloaded or uploaded"
    )


def test_a_round_not_yet_open_is_left_alone_without_a_window_check() -> None:
    w = world()
    now = datetime.now(UTC)
    later = RoundInfo(ROUND, now + timedelta(hours=1), now + timedelta(hours=2))
    decision = decide_round(w.ctx.services, Mode.SCHEDULED, later)
    assert not decision.goes_on and not decision.after_window
    assert decision.reason is not None and "already checked" not in decision.reason
    window = f"{later.open_time.isoformat()} to {later.close_time.isoformat()}"
    assert decision.reason.endswith(
        f"is not open for submissions (window {window}); nothing was downloaded or uploaded"
    )


# read_manifest


def test_read_manifest_narrows_to_the_names_and_their_members() -> None:
    w = world()
    w.models.texts["models.json"] = manifest(
        model("a"), model("b"), model("c"), model("e", members={"a": 1, "b": 1})
    ).model_dump_json()
    assert [m.name for m in read_manifest(w.ctx.services, ["e"]).models] == ["a", "b", "e"]
    assert [m.name for m in read_manifest(w.ctx.services, None).models] == ["a", "b", "c", "e"]


def test_a_malformed_manifest_names_its_container_and_blob() -> None:
    w = world()
    w.models.texts["models.json"] = "{not json"
    with pytest.raises(ManifestError, match=r"^models/models\.json: not valid JSON"):
        read_manifest(w.ctx.services, None)


# _not_in_account


def test_every_model_to_submit_must_be_in_the_account() -> None:
    entries = manifest(model("a"), model("m", submit=False), model("c"))
    failed = _not_in_account(entries, {"a": "id-a"})
    assert list(failed) == ["c"]  # `m` is never submitted, so it need not be a Numerai model
    assert failed["c"].status is ModelStatus.FAILED
    assert failed["c"].error == (
        "model 'c' is not a Classic model of this Numerai account; the account has: a"
    )


def test_an_empty_account_says_it_has_no_models() -> None:
    failed = _not_in_account(manifest(model("a")), {})
    error = failed["a"].error
    assert error is not None and error.endswith("the account has: no models")


# _needed


def test_submit_false_members_are_kept_only_for_an_ensemble_to_submit() -> None:
    specs = manifest(
        model("m", submit=False),
        model("unused", submit=False),
        model("a"),
        model("e", members={"m": 1, "a": 1}),
    ).in_order()
    pending, skipped = _needed(specs, {s.name: ModelReport(s.name) for s in specs})
    assert [s.name for s in pending] == ["m", "a", "e"]
    assert list(skipped) == ["unused"]
    assert skipped["unused"].status is ModelStatus.SKIPPED
    assert skipped["unused"].error == (
        "model 'unused': submit is false and no ensemble to submit this run needs it"
    )


def test_members_of_an_ensemble_already_done_are_skipped() -> None:
    specs = manifest(model("m", submit=False), model("e", members={"m": 1})).in_order()
    lines = {s.name: ModelReport(s.name) for s in specs}
    lines["e"].status = ModelStatus.ALREADY_SUBMITTED
    pending, skipped = _needed(specs, lines)
    assert pending == [] and list(skipped) == ["m"]


def test_a_nested_submit_false_ensemble_keeps_its_members_for_the_outer_one() -> None:
    # The walk goes from the last ensemble down: the outer one wants the inner, which wants
    # its member.
    specs = manifest(
        model("m", submit=False),
        model("inner", members={"m": 1}, submit=False),
        model("a"),
        model("outer", members={"inner": 1, "a": 1}),
    ).in_order()
    pending, skipped = _needed(specs, {s.name: ModelReport(s.name) for s in specs})
    assert [s.name for s in pending] == ["m", "inner", "a", "outer"] and skipped == {}


# plan_models


def plan(
    w: World, m: Manifest, decision: RoundDecision | None = None, account: dict[str, str] = ACCOUNT
) -> ModelPlan:
    return plan_models(w.ctx, m, account, decision or RoundDecision(open_round(), True))


def test_models_in_the_ledger_are_already_submitted() -> None:
    w = world()
    w.ledger.add("a", "sub-earlier")
    result = plan(w, manifest(model("a"), model("b")))
    assert statuses(result.lines) == {"a": ModelStatus.ALREADY_SUBMITTED, "b": ModelStatus.PENDING}
    assert result.lines["a"].submission_id == "sub-earlier"
    assert result.lines["a"].submission is SubmissionState.EXISTS
    assert [s.name for s in result.pending] == ["b"]


def intent(name: str, filename: str) -> SubmissionIntent:
    return SubmissionIntent(ROUND, name, f"id-{name}", filename, "stopped-run")


def test_an_intent_numerai_lists_is_recorded_and_not_submitted_again() -> None:
    w = world()
    w.ledger.intents[(ROUND, "a")] = intent("a", "a-upload.csv")
    w.numerai.list("id-a", "a-upload.csv", "sub-found")
    result = plan(w, manifest(model("a"), model("b")))
    assert result.lines["a"].status is ModelStatus.ALREADY_SUBMITTED
    assert result.lines["a"].submission_id == "sub-found"
    assert w.ledger.submission_for(ROUND, "a") is not None  # recorded for the next run
    assert w.ledger.intent_for(ROUND, "a") is None
    assert [s.name for s in result.pending] == ["b"]


def test_an_intent_numerai_does_not_list_is_forgotten_and_the_model_submitted() -> None:
    w = world()
    w.ledger.intents[(ROUND, "a")] = intent("a", "a-upload.csv")
    result = plan(w, manifest(model("a")))
    assert result.lines["a"].status is ModelStatus.PENDING
    assert [s.name for s in result.pending] == ["a"]
    assert w.ledger.intent_for(ROUND, "a") is None


def test_an_intent_that_cannot_be_checked_fails_the_model_with_its_submission_unknown() -> None:
    w = world()
    w.ledger.intents[(ROUND, "a")] = intent("a", "a-upload.csv")
    w.numerai.fail_listing = NumeraiApiError("Numerai answered 503")
    result = plan(w, manifest(model("a"), model("b")))
    line = result.lines["a"]
    assert line.status is ModelStatus.FAILED and line.submission is SubmissionState.UNKNOWN
    assert line.error is not None
    assert (
        "run stopped-run asked Numerai to submit 'a-upload.csv' and never recorded the answer"
    ) in line.error
    assert "(Numerai answered 503), so it is not submitted again" in line.error
    assert [s.name for s in result.pending] == ["b"]  # never submitted twice
    assert w.ledger.intent_for(ROUND, "a") is not None  # the next run checks again


def test_force_resubmit_ignores_the_ledger() -> None:
    w = world(force_resubmit=True)
    w.ledger.add("a", "sub-earlier")
    result = plan(w, manifest(model("a")))
    assert result.lines["a"].status is ModelStatus.PENDING
    assert [s.name for s in result.pending] == ["a"]


def test_a_test_run_works_on_models_in_the_ledger_and_notes_it_on_decided_lines() -> None:
    w = world(Mode.TEST)
    w.ledger.add("a", "sub-a")
    w.ledger.add("c", "sub-c")  # in the ledger from when it was a model of the account
    result = plan(w, manifest(model("a"), model("c")))
    # Proved again: the model step, not planning, notes the ledger on it.
    assert result.lines["a"].status is ModelStatus.PENDING
    assert result.lines["c"].status is ModelStatus.FAILED
    c = result.lines["c"]
    assert (c.submission_id, c.submission) == ("sub-c", SubmissionState.EXISTS)


def test_plan_lines_follow_the_manifest_with_ensembles_after_members() -> None:
    w = world()
    result = plan(
        w,
        manifest(model("e", members={"a": 1, "b": 1}), model("a"), model("b")),
        account={**ACCOUNT, "e": "id-e"},
    )
    assert list(result.lines) == ["a", "b", "e"]
    assert [s.name for s in result.pending] == ["a", "b", "e"]


def test_after_the_window_numerai_lists_decide_the_lines() -> None:
    w = world(round_=closed_round())
    round_ = closed_round()
    w.ledger.add("a", "sub-ledger")  # Numerai does not list it
    in_window = round_.open_time + timedelta(minutes=5)
    w.numerai.list("id-b", "made-elsewhere.csv", "sub-b", when=in_window)
    after = RoundDecision(round_, True, after_window=True)
    result = plan(w, manifest(model("a"), model("b")), after)
    a, b = result.lines["a"], result.lines["b"]
    assert a.status is ModelStatus.ALREADY_SUBMITTED
    assert a.warnings == [
        (
            f"model 'a': the ledger's submission sub-ledger is not among those "
            f"Numerai lists for round {ROUND}"
        )
    ]
    assert (b.status, b.submission_id) == (ModelStatus.ALREADY_SUBMITTED, "sub-b")
    assert b.warnings == [
        (f"model 'b': Numerai lists a submission for round {ROUND} that this app did not make")
    ]
    assert result.pending == []


def test_after_the_window_a_late_submission_does_not_count_and_a_failed_look_is_a_warning() -> None:
    w = world()
    round_ = closed_round()
    # Listed, but made after the staking close: not a submission in the window.
    w.numerai.list("id-a", "late.csv", "sub-late", when=round_.close_time + timedelta(minutes=1))
    after = RoundDecision(round_, True, after_window=True)
    result = plan(w, manifest(model("a")), after)
    assert result.lines["a"].status is ModelStatus.PENDING and result.lines["a"].warnings == []

    w.numerai.fail_listing = NumeraiApiError("Numerai answered 503")
    result = plan(w, manifest(model("a")), after)
    assert result.lines["a"].status is ModelStatus.PENDING  # the model step decides it
    assert result.lines["a"].warnings == [
        (
            f"model 'a': whether Numerai lists a submission for round {ROUND} could not be "
            "checked: Numerai answered 503"
        )
    ]


def test_planning_notes_a_newer_data_version() -> None:
    w = world()
    w.numerai.versions = ["v5.3", "v5.4"]
    result = plan(w, manifest(model("a"), model("b")))
    assert len(result.notes) == 1 and result.notes[0].startswith("Numerai lists data version v5.4")


# newer_version_note


def test_newer_version_note_names_each_older_version_and_its_models() -> None:
    w = world()  # NUMERAI_DATA_VERSION v5.3
    # v5.10 is newer than v5.3: versions compare as numbers, not text.
    w.numerai.versions = ["v4.3", "v5.0", "v5.2", "v5.3", "v5.10"]
    pending = [
        model("a"),
        model("b", data_version="v5.2"),
        model("c", data_version="v5.10"),
        model("d", data_version="v5.2"),
        model("e", members={"a": 1, "c": 1}),
    ]
    assert newer_version_note(w.ctx, pending) == (
        "Numerai lists data version v5.10, newer than some models use (v5.2: b, d; v5.3: a); "
        "a model keeps the version it was trained on: retrain it on the new one, then set its "
        "data_version"
    )


def test_no_note_when_every_model_uses_the_newest_version_or_numerai_lists_none() -> None:
    w = world()
    w.numerai.versions = ["v5.2", "v5.3"]
    assert newer_version_note(w.ctx, [model("a")]) is None
    w.numerai.versions = []
    assert newer_version_note(w.ctx, [model("a")]) is None


def test_a_failed_look_up_of_data_versions_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    w.numerai.fail_versions = NumeraiApiError("Numerai answered 500")
    with caplog.at_level(logging.WARNING, logger="shared.run.planning"):
        assert newer_version_note(w.ctx, [model("a")]) is None
    assert "the data versions Numerai lists could not be had: Numerai answered 500" in caplog.text


# job._assemble and job._run


def report_with(plan_: ModelPlan) -> RunReport:
    report = RunReport(RUN_ID, Mode.SCHEDULED, STARTED, reason="planning's reason")
    report.models = list(plan_.lines.values())
    return report


def test_assemble_puts_the_steps_lines_in_planning_order_with_planning_warnings_first() -> None:
    planned = {
        "a": ModelReport("a", warnings=["from planning"]),
        "b": ModelReport("b"),
        "c": ModelReport("c", status=ModelStatus.SKIPPED),
    }
    the_plan = ModelPlan(planned, [model("a"), model("b")])
    report = report_with(the_plan)
    done = ModelResults(
        {
            "b": ModelReport("b", status=ModelStatus.SUBMITTED),
            "a": ModelReport("a", status=ModelStatus.SUBMITTED, warnings=["from the step"]),
        },
        notes=["round closed during the run"],
    )
    _assemble(report, the_plan, done, RoundDecision(open_round(), True))
    assert [m.name for m in report.models] == ["a", "b", "c"]
    assert report.model("a").warnings == ["from planning", "from the step"]
    assert report.model("a").status is ModelStatus.SUBMITTED
    assert report.reason == "round closed during the run"  # the step's last note
    assert report.status is RunStatus.RUNNING  # finish() decides


def test_assemble_keeps_the_after_window_reason() -> None:
    the_plan = ModelPlan({"a": ModelReport("a")}, [model("a")])
    report = report_with(the_plan)
    done = ModelResults({"a": ModelReport("a", status=ModelStatus.SUBMITTED)}, notes=["a note"])
    after = RoundDecision(closed_round(), True, "after the window", after_window=True)
    _assemble(report, the_plan, done, after)
    assert report.reason == "planning's reason"


def test_a_stop_fails_the_run_and_every_line_left_pending() -> None:
    the_plan = ModelPlan({"a": ModelReport("a"), "b": ModelReport("b")}, [model("a"), model("b")])
    report = report_with(the_plan)
    done = ModelResults(
        {"a": ModelReport("a", status=ModelStatus.SUBMITTED), "b": ModelReport("b")},
        stopped=STOPPED,
    )
    _assemble(report, the_plan, done, RoundDecision(open_round(), True))
    assert report.status is RunStatus.FAILED
    assert report.reason == STOPPED
    assert report.model("a").status is ModelStatus.SUBMITTED
    assert report.model("b").status is ModelStatus.FAILED
    assert report.model("b").error == f"not finished: {report.reason}"


class RecordingExecutor:
    """An executor that notes what it was handed and reports every model submitted."""

    def __init__(self) -> None:
        self.handed: list[str] | None = None

    def execute(
        self, ctx: object, pending: list[ModelSpec], account: dict[str, str], report: RunReport
    ) -> ModelResults:
        self.handed = [s.name for s in pending]
        return ModelResults(
            {s.name: ModelReport(s.name, status=ModelStatus.SUBMITTED) for s in pending}
        )


def test_run_hands_only_pending_models_to_the_executor_and_marks_the_window_checked() -> None:
    w = world(round_=closed_round(), account=ACCOUNT)
    w.models.texts["models.json"] = manifest(model("a"), model("b")).model_dump_json()
    w.ledger.add("a", "sub-a")
    w.numerai.list("id-a", "a.csv", "sub-a", when=closed_round().open_time)
    report = RunReport(RUN_ID, Mode.SCHEDULED, STARTED)
    executor = RecordingExecutor()
    fanned_out = _run(w.ctx.services, report, _Selection(None), executor, float("inf"), None)
    assert fanned_out is False
    assert executor.handed == ["b"]
    assert report.after_window and report.round_number == ROUND
    assert [(m.name, m.status) for m in report.models] == [
        ("a", ModelStatus.ALREADY_SUBMITTED),
        ("b", ModelStatus.SUBMITTED),
    ]
    assert w.runs.window_checked == {ROUND: RUN_ID}


def test_run_with_no_round_does_nothing() -> None:
    w = world()
    w.numerai.round = None
    report = RunReport(RUN_ID, Mode.SCHEDULED, STARTED)
    executor = RecordingExecutor()
    assert _run(w.ctx.services, report, None, executor, float("inf"), None) is False
    assert report.status is RunStatus.NOTHING_TO_DO
    assert report.reason == "Numerai reports no current round"
    assert executor.handed is None and report.models == []
