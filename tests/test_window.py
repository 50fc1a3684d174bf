"""The staking window: after closeStakingTime nothing is uploaded unless SUBMIT_LATE, and the first run after
the close checks with Numerai what it lists, once per round, raising the "missed the round" record."""

from __future__ import annotations

import logging
from pathlib import Path

import numerapi
import numerapi.base_api
import pytest

from devkit.local_stack import LocalStack
from shared.errors import RunFailed
from tests.support import MODELS, fire_timer, line, reports, results, uploads


def missed_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "round_missed", None) == "true"]


def test_a_round_closed_before_any_run_is_archived_reported_missed_and_checked_once(
    deployed: LocalStack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployed.sandbox.close_round()
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    assert report["after_window"] is True
    assert uploads(deployed) == []
    for name in MODELS:
        assert line(report, name)["status"] == "missed"
        assert results(deployed).archive.read(1200, name) is not None  # archived, not lost
    [record] = missed_records(caplog)
    assert record.levelname == "ERROR" and record.models_missed == ",".join(sorted(MODELS))

    fire_timer()  # later firings of the healing schedule: the round was checked
    assert reports(deployed)[-1]["status"] == "nothing_to_do"
    assert len(missed_records(caplog)) == 1


def test_submit_late_uploads_after_the_close_and_says_by_how_much(
    deployed: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SUBMIT_LATE", "true")
    deployed.sandbox.close_round()
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded"
    assert "late submissions are scored but not staked (SUBMIT_LATE=true)" in report["reason"]
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == sorted(MODELS)
    assert line(report, "demo_onnx")["warnings"][-1].startswith("model 'demo_onnx': submitted ")
    assert missed_records(caplog) == []


def test_submit_late_tries_again_after_a_first_late_run_whose_uploads_all_failed(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #21, item 5: the first run after the close marked the round checked all the same,
    # so every later run ended nothing_to_do and the late submission never happened.
    monkeypatch.setenv("SUBMIT_LATE", "true")
    deployed.sandbox.close_round()
    deployed.sandbox.faults.put_status = 403
    with pytest.raises(RunFailed):
        fire_timer()
    assert deployed.sandbox.submissions == []
    assert results(deployed).runs.window_checked_by(1200) is None  # its outcome may still change
    deployed.sandbox.faults.reset()
    fire_timer()
    report = reports(deployed)[-1]
    assert report["after_window"] is True and report["status"] == "succeeded"
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == sorted(MODELS)
    assert results(deployed).runs.window_checked_by(1200) == report["run_id"]
    fire_timer()  # every model has its outcome now: the round is checked
    assert reports(deployed)[-1]["status"] == "nothing_to_do"


def test_the_first_run_after_the_close_confirms_with_numerai_what_was_submitted(
    deployed: LocalStack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fire_timer()
    submitted = {line(reports(deployed)[-1], name)["submission_id"] for name in MODELS}
    deployed.sandbox.close_round()
    fire_timer()
    report = reports(deployed)[-1]
    assert report["after_window"] is True and report["status"] == "nothing_to_do"
    assert {line(report, name)["status"] for name in MODELS} == {"already_submitted"}
    assert {line(report, name)["submission_id"] for name in MODELS} == submitted
    assert all(line(report, name)["warnings"] == [] for name in MODELS)
    assert missed_records(caplog) == []


def test_a_submission_numerai_lists_but_the_ledger_lacks_counts_and_is_named(
    deployed: LocalStack,
) -> None:
    fire_timer()
    ledger = results(deployed)
    for record in ledger.ledger.records(1200):
        if record.model_name == "demo_onnx":  # as if another tool had submitted it
            deployed.blob_service.get_container_client(deployed.results_container).delete_blob(
                f"ledger/round-1200/{record.model_name}.json"
            )
    deployed.sandbox.close_round()
    fire_timer()
    onnx = line(reports(deployed)[-1], "demo_onnx")
    assert onnx["status"] == "already_submitted"
    assert onnx["warnings"] == [
        "model 'demo_onnx': Numerai lists a submission for round 1200 that this app did not make"
    ]
    assert len(deployed.sandbox.submissions) == len(MODELS)


def test_a_late_submission_queued_into_the_next_round_counts_for_that_round(
    deployed: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Round 1200 closes; SUBMIT_LATE uploads anyway, and Numerai queues the submissions into 1201.
    monkeypatch.setenv("SUBMIT_LATE", "true")
    deployed.sandbox.close_round()
    fire_timer()
    late = {s.model_name: s.id for s in deployed.sandbox.submissions}
    assert {s.round for s in deployed.sandbox.submissions} == {1201}
    # Round 1201 opens after them (their insertedAt is before its openTime) and closes before any run.
    opened = deployed.sandbox.open_new_round()
    deployed.sandbox.close_round()
    monkeypatch.setenv("SUBMIT_LATE", "false")
    fire_timer()
    report = reports(deployed)[-1]
    assert report["round_number"] == opened.number and report["after_window"] is True
    for name in MODELS:  # counted by round number, as Numerai counts them: not missed
        assert line(report, name)["status"] == "already_submitted", line(report, name)
        assert line(report, name)["submission_id"] == late[name]
        assert line(report, name)["warnings"] == [
            (
                f"model '{name}': Numerai counts for round 1201 a late submission of the round before, "
                f"queued into this one ({late[name]})"
            )
        ]
    assert missed_records(caplog) == []
    assert len(deployed.sandbox.submissions) == len(MODELS)


def test_a_submission_another_tool_made_on_a_webhook_call_is_named_with_its_trigger_id(
    deployed: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fire_timer()
    # numerai-cli's nodes pass the call's trigger id through numerapi, which reads TRIGGER_ID.
    monkeypatch.setenv("TRIGGER_ID", "t-other-tool")
    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", deployed.sandbox.url)
    csv = tmp_path / "predictions.csv"
    csv.write_text(results(deployed).archive.read(1200, "demo_onnx"))
    other = numerapi.NumerAPI(*deployed.sandbox.credentials).upload_predictions(
        str(csv), model_id=deployed.sandbox.models["demo_onnx"]
    )
    deployed.blob_service.get_container_client(deployed.results_container).delete_blob(
        "ledger/round-1200/demo_onnx.json"
    )
    deployed.sandbox.close_round()
    fire_timer()
    onnx = line(reports(deployed)[-1], "demo_onnx")
    assert onnx["status"] == "already_submitted" and onnx["submission_id"] == other
    assert onnx["warnings"] == [
        (
            "model 'demo_onnx': Numerai lists a submission for round 1200 that this app did not make "
            "(trigger t-other-tool)"
        )
    ]


def test_a_key_that_may_not_read_submissions_is_asked_once_after_the_close(
    deployed: LocalStack,
) -> None:
    fire_timer()
    deployed.sandbox.close_round()
    deployed.sandbox.key_scopes = ["read_user_info", "upload_submission"]
    before = len(deployed.sandbox.requests_log)
    fire_timer()
    report = reports(deployed)[-1]
    asked = [r for r in deployed.sandbox.requests_log[before:] if r == "graphql submissions"]
    assert len(asked) == 1, asked
    warnings = [w for name in MODELS for w in line(report, name)["warnings"]]
    assert len(warnings) == 1 and "Insufficient permission" in warnings[0]
    assert "the other models were not checked" in warnings[0]
