"""The fault matrix, continued: submissions are made exactly once, whatever fails and
wherever a run stops (issue #9, faults 1-4, 6 and 7).

Every row runs the real app against Azurite and the Numerai sandbox and checks what
Numerai received, what the ledger holds and what the report says, per model, about
whether a submission exists.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient

from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.errors import RunFailed
from shared.executors.queue import fanin
from shared.executors.queue.messages import DEADLINE, TaskMessage
from shared.executors.queue.task import run_deadline
from shared.steps.publish import publish
from tests.support import MODELS, deliver, fire_timer, line, post_test_run, reports, results

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("no_secret_anywhere")


def submitted_once(stack: LocalStack) -> None:
    """Each model submitted exactly once, and the ledger says exactly what Numerai has."""
    assert sorted(s.model_name for s in stack.sandbox.submissions) == MODELS
    assert {(r.model_name, r.submission_id) for r in results(stack).ledger.records()} == {
        (s.model_name, s.id) for s in stack.sandbox.submissions
    }


def test_create_submission_answering_too_late_is_found_not_repeated(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMERAI_TIMEOUT_SECONDS", "1")
    deployed.sandbox.faults.create_submission_delay_seconds = 2
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded"
    for name in MODELS:
        model = line(report, name)
        assert model["status"] == "submitted" and model["submission"] == "exists"
        assert model["warnings"] == [
            f"model '{name}': Numerai API did not answer create_submission (last: timed out); "
            f"Numerai lists the upload, as submission {model['submission_id']}"
        ]
    submitted_once(deployed)
    # Found by the name Numerai gave the upload, whose shape is not the name uploaded (issue #19, point 6).
    for submission in deployed.sandbox.submissions:
        assert re.fullmatch(
            rf"{submission.model_name}_round1200-[A-Za-z]{{10}}\.csv", submission.filename
        )
    fire_timer()  # the next firing finds everything in the ledger
    assert reports(deployed)[-1]["status"] == "nothing_to_do"
    submitted_once(deployed)


def test_create_submission_answering_502_after_creating_is_found_not_repeated(
    deployed: LocalStack,
) -> None:
    deployed.sandbox.faults.create_submission_status = 502
    fire_timer()
    report = reports(deployed)[-1]
    for name in MODELS:
        assert line(report, name)["status"] == "submitted"
        assert (
            "did not answer create_submission (last: HTTP 502)" in line(report, name)["warnings"][0]
        )
    assert (
        deployed.sandbox.requests_log.count("graphql create_submission") == 4
    )  # never asked twice
    submitted_once(deployed)


def test_create_submission_refused_leaves_nothing_and_the_next_run_submits(
    deployed: LocalStack,
) -> None:
    deployed.sandbox.faults.create_submission_error = "Internal server error"
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    for name in MODELS:
        assert (
            line(report, name)["error"]
            == f"model '{name}': Numerai API refused create_submission: Internal server error"
        )
        assert line(report, name)["submission"] == "none"
    assert deployed.sandbox.submissions == [] and results(deployed).ledger.records() == []
    deployed.sandbox.faults.reset()
    fire_timer()
    submitted_once(deployed)


def test_a_submission_numerai_does_not_list_is_still_recorded(deployed: LocalStack) -> None:
    deployed.sandbox.faults.hide_submissions = True
    fire_timer()
    report = reports(deployed)[-1]
    for name in MODELS:
        model = line(report, name)
        assert model["status"] == "submitted" and model["submission"] == "exists"
        assert model["warnings"] == [
            f"model '{name}': Numerai created submission {model['submission_id']} but did not list it when asked"
        ]
    submitted_once(deployed)
    fire_timer()
    submitted_once(deployed)


def test_no_answer_and_no_list_is_unknown_and_the_next_run_finds_it(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMERAI_TIMEOUT_SECONDS", "1")
    deployed.sandbox.faults.create_submission_delay_seconds = 2
    deployed.sandbox.faults.submissions_status = 503
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    for name in MODELS:
        model = line(report, name)
        assert model["status"] == "failed" and model["submission"] == "unknown"
        assert model["error"].startswith(
            f"model '{name}': Numerai API did not answer create_submission "
            "(last: timed out), and its submissions could not be listed"
        )
        assert model["error"].endswith(
            "whether it was submitted is unknown. The next run checks before submitting again"
        )
    assert results(deployed).ledger.records() == [] and len(deployed.sandbox.submissions) == 4

    # While Numerai's list still fails, the next run does not risk a second submission.
    deployed.sandbox.faults.create_submission_delay_seconds = 0
    with pytest.raises(RunFailed):
        fire_timer()
    assert "so it is not submitted again" in line(reports(deployed)[-1], "demo_lightgbm")["error"]
    assert len(deployed.sandbox.submissions) == 4

    deployed.sandbox.faults.reset()
    fire_timer()
    healed = reports(deployed)[-1]
    assert healed["status"] == "nothing_to_do"
    assert all(
        m["status"] == "already_submitted" and m["submission"] == "exists" for m in healed["models"]
    )
    submitted_once(deployed)


def kill_a_run_after_its_first_create_submission(stack: LocalStack) -> None:
    """A scheduled run in its own process, SIGKILLed right after Numerai answered a create_submission."""
    victim: subprocess.Popen | None = None

    def kill_when_it_checks(entry: str) -> None:
        # The first `submissions` query comes right after the first create_submission answered.
        if entry == "graphql submissions" and victim is not None and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)

    stack.sandbox.on_request = kill_when_it_checks
    victim = subprocess.Popen(
        [sys.executable, "-m", "shared", "run", "--submit"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert victim.wait(180) == -signal.SIGKILL
    stack.sandbox.on_request = None


def test_a_run_killed_after_create_submission_is_reconciled_not_resubmitted(
    deployed: LocalStack,
) -> None:
    kill_a_run_after_its_first_create_submission(deployed)
    [first] = deployed.sandbox.submissions  # one model was submitted; its run never recorded it
    assert results(deployed).ledger.records() == []

    fire_timer()  # waits for the dead run's lease, then reconciles with Numerai before submitting
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded"
    reconciled = line(report, first.model_name)
    assert reconciled["status"] == "already_submitted"
    assert reconciled["submission_id"] == first.id and reconciled["submission"] == "exists"
    submitted_once(deployed)


def test_a_killed_run_followed_before_numerai_lists_its_submission_does_not_submit_twice(
    deployed: LocalStack,
) -> None:
    # Issue #21, item 6: seen as two submissions of one model.
    deployed.sandbox.faults.list_lag_seconds = 3600
    kill_a_run_after_its_first_create_submission(deployed)
    [first] = deployed.sandbox.submissions

    with pytest.raises(RunFailed):
        fire_timer()  # Numerai does not list it yet: held, not submitted again
    held = line(reports(deployed)[-1], first.model_name)
    assert (held["status"], held["submission"]) == ("failed", "unknown")
    assert (
        "Numerai does not list it yet; its list may lag behind create_submission" in held["error"]
    )
    assert [s.id for s in deployed.sandbox.submissions if s.model_name == first.model_name] == [
        first.id
    ]

    deployed.sandbox.faults.reset()  # the list caught up
    fire_timer()
    found = line(reports(deployed)[-1], first.model_name)
    assert (found["status"], found["submission_id"]) == ("already_submitted", first.id)
    submitted_once(deployed)
    assert results(deployed).ledger.intent_for(1200, first.model_name) is None


def test_a_changed_manifest_entry_is_predicted_again_not_taken_from_the_archive(
    deployed: LocalStack, small_round: SyntheticRound
) -> None:
    deployed.sandbox.faults.put_status = 403  # everything is archived, nothing uploaded
    with pytest.raises(RunFailed):
        fire_timer()
    old = results(deployed).archive.read(1200, "demo_onnx")
    assert old is not None and deployed.sandbox.submissions == []

    models = deployed.blob_service.get_container_client(deployed.models_container)
    manifest = json.loads(models.download_blob("models.json").readall())
    entry = next(m for m in manifest["models"] if m["name"] == "demo_onnx")
    # The same model file and width, other columns in each input: other predictions.
    entry["features"] = list(reversed(small_round.feature_sets["small"]))
    models.upload_blob("models.json", json.dumps(manifest), overwrite=True)
    deployed.sandbox.faults.reset()

    fire_timer()
    report = reports(deployed)[-1]
    assert line(report, "demo_onnx")["from_archive"] is False
    assert all(line(report, name)["from_archive"] for name in MODELS if name != "demo_onnx")
    uploaded = next(s.csv for s in deployed.sandbox.submissions if s.model_name == "demo_onnx")
    assert uploaded != old.encode()
    # What the current entry predicts, made by a test run: exactly what was uploaded.
    assert post_test_run(b'{"models": ["demo_onnx"]}').status_code == 200
    assert (
        uploaded == results(deployed).archive.read(1200, "demo_onnx", "test-predictions").encode()
    )
    submitted_once(deployed)


def test_a_lost_lease_stops_the_run_before_its_next_upload(deployed: LocalStack) -> None:
    lock = deployed.blob_service.get_blob_client(deployed.results_container, "locks/scheduled-run")
    second: list[BaseException | None] = []

    def break_in_and_run_another(entry: str) -> None:
        # The first upload begins: the lease is broken and a second run takes the lock and
        # does the whole round, as it would after renewals slower than the lease.
        if entry == "graphql submission_upload_auth" and not second:
            deployed.sandbox.on_request = None
            BlobLeaseClient(lock).break_lease(lease_break_period=0)
            try:
                fire_timer()
                second.append(None)
            except BaseException as exc:
                second.append(exc)

    deployed.sandbox.on_request = break_in_and_run_another
    with pytest.raises(RunFailed) as stopped:
        fire_timer()
    assert second == [None]
    assert "this run could not confirm its lock 'locks/scheduled-run'" in str(stopped.value)
    first_run = reports(deployed)[0]
    assert first_run["status"] == "failed"
    assert all(m["submission"] == "none" for m in first_run["models"])
    submitted_once(deployed)


def test_a_run_right_after_a_crashed_one_waits_for_its_lease_and_runs(deployed: LocalStack) -> None:
    results(deployed)  # creates the container, as the crashed run had
    lock = deployed.blob_service.get_blob_client(deployed.results_container, "locks/scheduled-run")
    lock.upload_blob(b"", overwrite=True)
    lock.acquire_lease(lease_duration=15)  # held by a run that died a moment ago: never renewed
    started = time.monotonic()
    fire_timer()
    assert time.monotonic() - started >= 10
    assert reports(deployed)[-1]["status"] == "succeeded"
    submitted_once(deployed)


def test_a_run_meeting_a_live_holder_says_so_and_does_nothing(deployed: LocalStack) -> None:
    holding = threading.Event()
    release = threading.Event()

    results(deployed)  # creates the container

    def hold_the_lock() -> None:
        lock = deployed.blob_service.get_blob_client(
            deployed.results_container, "locks/scheduled-run"
        )
        lock.upload_blob(b"", overwrite=True)
        lease = lock.acquire_lease(lease_duration=15)
        holding.set()
        while not release.wait(4):
            lease.renew()  # alive and working
        lease.release()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert holding.wait(30)
        fire_timer()  # not a failure: the holder does the round
    finally:
        release.set()
        holder.join(30)
    report = reports(deployed)[-1]
    assert report["status"] == "locked"
    assert report["reason"] == (
        "another run held the lock 'locks/scheduled-run' for all of the 20 s this "
        "run waited, so it is alive and working; this run did nothing"
    )
    assert deployed.sandbox.submissions == []


def test_the_run_deadline_stops_a_slow_model_and_uploads_nothing_after_it(
    deployed: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_secret_anywhere: list[str],
) -> None:
    import cloudpickle

    def slow(live_features, live_benchmark_models=None):
        import time as clock

        clock.sleep(60)
        return live_features[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    container = deployed.blob_service.get_container_client(deployed.models_container)
    manifest = json.loads(container.download_blob("models.json").readall())
    manifest["models"].append(
        {"name": "slow_model", "file": "slow.pkl", "format": "numerai_pickle", "trust_pickle": True}
    )
    container.upload_blob("slow.pkl", cloudpickle.dumps(slow), overwrite=True)
    container.upload_blob("models.json", json.dumps(manifest), overwrite=True)
    deployed.sandbox.models["slow_model"] = "slow_model-id"
    monkeypatch.setenv(
        "RUN_DEADLINE_SECONDS", "12"
    )  # past the four quick models, not past the slow one

    started = time.monotonic()
    with pytest.raises(RunFailed) as failed:
        fire_timer()
    no_secret_anywhere.append(str(failed.value))
    assert time.monotonic() - started < 40  # not the model's 60 s, nor its 600 s limit
    report = reports(deployed)[-1]
    assert report["status"] == "failed"
    assert line(report, "slow_model")["error"] == (
        "model 'slow_model': stopped while predicting because the run reached its deadline "
        "(RUN_DEADLINE_SECONDS); the models that finished are archived"
    )
    for name in MODELS:  # predicted in time, archived, but no upload starts after the deadline
        assert line(report, name)["predictions_blob"] == f"predictions/round-1200/{name}.csv"
        assert line(report, name)["error"].startswith(
            "not finished: the run reached its deadline (RUN_DEADLINE_SECONDS=12) before uploading model"
        )
        assert line(report, name)["submission"] == "none"
    assert deployed.sandbox.submissions == []
    # The lock was freed: the next run starts at once and uploads what was archived.
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "1500")
    manifest["models"].pop()
    container.upload_blob("models.json", json.dumps(manifest), overwrite=True)
    started = time.monotonic()
    fire_timer()
    assert time.monotonic() - started < 10
    assert all(line(reports(deployed)[-1], name)["from_archive"] for name in MODELS)
    submitted_once(deployed)


def test_a_queue_task_whose_upload_outlasts_the_deadline_corrects_the_report(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #21, item 4: the deadline message failed every model without a result while one
    # task's create_submission was on its way; Numerai and the ledger have that submission.
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    fire_timer()
    [planned] = reports(deployed)
    deadline = TaskMessage(DEADLINE, planned["run_id"], planned["round_number"])
    fired: list[str] = []

    def deadline_during_create_submission(entry: str) -> None:
        if entry == "graphql create_submission" and not fired:
            fired.append(entry)
            run_deadline(deadline)  # the deadline message, delivered while the task uploads

    deployed.sandbox.on_request = deadline_during_create_submission
    assert deliver(deployed, limit=1) == 1
    deployed.sandbox.on_request = None
    deliver(deployed)  # the other tasks find their models failed by the deadline

    [report] = reports(deployed)
    [submission] = deployed.sandbox.submissions
    late = line(report, submission.model_name)
    assert (late["status"], late["submission"], late["submission_id"]) == (
        "submitted",
        "exists",
        submission.id,
    )
    assert "Numerai has its submission, so the report was corrected" in late["warnings"][-1]
    others = sorted(set(MODELS) - {submission.model_name})
    assert report["status"] == "failed"
    assert report["reason"] == f"3 of 4 models failed: {', '.join(others)}"
    for name in others:
        assert "no result by the run's deadline" in line(report, name)["error"]
    assert [(r.model_name, r.submission_id) for r in results(deployed).ledger.records()] == [
        (submission.model_name, submission.id)
    ]


class Killed(BaseException):
    """The instance stopping mid-call: nothing after this point of the task runs."""


def test_a_queue_run_whose_finisher_dies_before_its_record_is_recorded_by_the_next_delivery(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue #21, item 7: the final report written, then the instance died before the page,
    # the telemetry record (what the alert reads) and deleting the deadline message.
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    fire_timer()
    [planned] = reports(deployed)

    def dies(*args: object) -> None:
        raise Killed

    monkeypatch.setattr(fanin, "publish", dies)
    with pytest.raises(Killed):
        deliver(deployed)
    assert reports(deployed)[0]["status"] == "succeeded"  # written, never published
    monkeypatch.setattr(fanin, "publish", publish)
    page = deployed.blob_service.get_blob_client(deployed.results_container, "reports/index.html")
    assert not page.exists()

    run_deadline(TaskMessage(DEADLINE, planned["run_id"], planned["round_number"]))
    records = [r for r in caplog.records if getattr(r, "run_status", None) == "succeeded"]
    assert [r.run_id for r in records] == [planned["run_id"]]
    assert page.exists()
    run_deadline(TaskMessage(DEADLINE, planned["run_id"], planned["round_number"]))
    assert len([r for r in caplog.records if getattr(r, "run_status", None)]) == 1  # once


def test_a_key_that_may_not_upload_is_reported_once_per_run(deployed: LocalStack) -> None:
    # The key reads the account and the round, but lacks the scope to upload.
    deployed.sandbox.key_scopes = ["read_user_info", "read_submission_info"]
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "failed"
    assert json.dumps(report).count("Insufficient permission") == 1
    assert "NUMERAI_SECRET_KEY" in report["reason"]
    for name in MODELS:
        assert line(report, name)["status"] == "failed"
    # Numerai was asked once, not once per model.
    asked = [r for r in deployed.sandbox.requests_log if "submission_upload_auth" in r]
    assert len(asked) == 1, asked
    assert deployed.sandbox.submissions == []
