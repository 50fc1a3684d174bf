"""The fault matrix: what a run does when storage, data, the Numerai API, the timer or a
model misbehaves. Every row runs the real app against Azurite and the Numerai sandbox
and checks what the run did, what the report says, what the ledger holds and what
Numerai received; and after every row, that no secret reached any output.

Rows tested elsewhere: a corrupt model file, a 5xx that recovers, bad credentials, an
unknown model, a failing PUT (tests/test_function_app.py); NaN, constant and too-short
outputs at the engine level (tests/test_engine.py, tests/test_hosted_runner_contract.py,
tests/test_isolation.py); create_submission slow, failing or unlisted, a run killed after
it, a changed manifest entry, a lost lease and a held lock (tests/test_faults_submissions.py).
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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devkit.azurite import ACCOUNT_KEY, free_port
from devkit.example_models import write_onnx_linear, write_onnx_stump
from devkit.fault_proxy import FaultProxy
from devkit.local_stack import FAKE_SECRET_KEY, LocalStack
from devkit.synthetic import SyntheticRound, write_round
from shared.errors import RunFailed
from shared.executors.run_folder import LOCK_FILE
from shared.report import RunReport
from tests.support import (
    MODELS,
    downloads,
    fire_timer,
    line,
    post_test_run,
    reports,
    results,
    uploads,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("no_secret_anywhere")


def failed_run(texts: list[str]) -> str:
    with pytest.raises(RunFailed) as error:
        fire_timer()
    texts.append(str(error.value))
    return str(error.value)


# --- Blob Storage -------------------------------------------------------------------


def test_storage_unreachable_fails_fast_and_says_so(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, no_secret_anywhere: list[str]
) -> None:
    unused = free_port()  # nothing listens there
    monkeypatch.setenv(
        "MODELS_STORAGE_CONNECTION_STRING",
        deployed.azurite.connection_string.replace(f":{deployed.azurite.port}/", f":{unused}/"),
    )
    started = time.monotonic()
    message = failed_run(no_secret_anywhere)
    assert time.monotonic() - started < 30
    assert (
        f"could not reach container '{deployed.results_container}': ServiceRequestError" in message
    )
    assert deployed.sandbox.requests_log == []  # nothing asked of Numerai, nothing uploaded


@pytest.fixture
def storage_proxy(deployed: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(deployed.azurite.port) as proxy:
        monkeypatch.setenv(
            "MODELS_STORAGE_CONNECTION_STRING",
            deployed.azurite.connection_string.replace(
                f":{deployed.azurite.port}/", f":{proxy.port}/"
            ),
        )
        yield proxy


def test_storage_5xx_that_recovers_is_retried(
    deployed: LocalStack, storage_proxy: FaultProxy
) -> None:
    storage_proxy.faults.fail_next = 2
    fire_timer()
    assert reports(deployed)[-1]["status"] == "succeeded"
    assert len(deployed.sandbox.submissions) == 4


def test_storage_5xx_for_good_fails_the_run_and_uploads_nothing(
    deployed: LocalStack, storage_proxy: FaultProxy, no_secret_anywhere: list[str]
) -> None:
    storage_proxy.faults.fail_all = True
    message = failed_run(no_secret_anywhere)
    assert (
        f"could not reach container '{deployed.results_container}': HttpResponseError: Service Unavailable"
        in message
    )
    assert storage_proxy.requests > 1  # the SDK retried before giving up
    assert uploads(deployed) == [] and deployed.sandbox.submissions == []


def test_storage_slower_than_the_timeout_fails_the_run(
    deployed: LocalStack,
    storage_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    no_secret_anywhere: list[str],
) -> None:
    monkeypatch.setenv("STORAGE_TIMEOUT_SECONDS", "0.5")
    storage_proxy.faults.delay_seconds = 2
    message = failed_run(no_secret_anywhere)
    assert (
        f"could not reach container '{deployed.results_container}': ServiceResponseTimeoutError"
        in message
    )
    assert "Read timed out. (read timeout=0.5)" in message
    assert deployed.sandbox.submissions == []


def test_a_missing_model_blob_fails_that_model_only(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    deployed.blob_service.get_container_client(deployed.models_container).delete_blob(
        "demo_onnx.onnx"
    )
    failed_run(no_secret_anywhere)
    report = reports(deployed)[-1]
    assert line(report, "demo_onnx")["error"] == (
        f"model 'demo_onnx': model file 'demo_onnx.onnx' not found in container '{deployed.models_container}'"
    )
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == [
        "demo_catboost",
        "demo_lightgbm",
        "demo_upload",
    ]
    assert len(results(deployed).ledger.records()) == 3


def test_a_manifest_with_an_error_fails_before_any_download(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob(
        "models.json", b'{"models": [{"name": "x", "format": "onx"}]}', overwrite=True
    )
    message = failed_run(no_secret_anywhere)
    assert f"{deployed.models_container}/models.json: model #1 ('x'): field 'format'" in message
    assert "field 'file': Field required" in message
    assert downloads(deployed) == [] and uploads(deployed) == []
    assert reports(deployed)[-1]["status"] == "failed"


def test_a_model_file_in_another_format_than_declared(
    deployed: LocalStack, example_models: Path, no_secret_anywhere: list[str]
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob(
        "demo_onnx.onnx", (example_models / "demo_lightgbm.txt").read_bytes(), overwrite=True
    )
    failed_run(no_secret_anywhere)
    assert line(reports(deployed)[-1], "demo_onnx")["error"] == (
        "model 'demo_onnx': 'demo_onnx.onnx' is declared \"onnx\" but looks like a LightGBM text model; "
        'set "format": "lightgbm"'
    )
    assert len(deployed.sandbox.submissions) == 3


# --- The round's data ---------------------------------------------------------------


def test_a_failing_download_is_retried_then_fails_the_run(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    deployed.sandbox.faults.download_status = 500
    message = failed_run(no_secret_anywhere)
    assert "download of v5.3/features.json failed" in message
    assert len(downloads(deployed)) == 3  # NUMERAI_RETRIES tries
    for model in reports(deployed)[-1]["models"]:  # every line says why it was not submitted
        assert model["error"].startswith("not finished: download of v5.3/features.json failed")
    assert uploads(deployed) == []


def test_a_truncated_download_is_resumed_and_the_run_completes(
    deployed: LocalStack, small_round: SyntheticRound
) -> None:
    deployed.sandbox.faults.truncate_download = True

    def heal_after_first_cut(entry: str) -> None:
        if entry.startswith("GET /files/"):
            threading.Timer(0.05, deployed.sandbox.faults.reset).start()

    deployed.sandbox.on_request = heal_after_first_cut
    fire_timer()
    assert reports(deployed)[-1]["status"] == "succeeded"
    assert len(deployed.sandbox.submissions) == 4


def test_a_live_file_that_is_not_parquet_fails_the_run(
    deployed: LocalStack, tmp_path: Path, no_secret_anywhere: list[str]
) -> None:
    garbage = tmp_path / "live.parquet"
    garbage.write_bytes(b"<html>Service temporarily unavailable</html>")
    deployed.sandbox.add_dataset("v5.3/live.parquet", garbage)
    message = failed_run(no_secret_anywhere)
    # Refused as it arrives, before any worker reads it.
    assert (
        "download of v5.3/live.parquet failed: not a readable parquet file "
        "(it starts with b'<htm', not PAR1)"
    ) in message
    assert uploads(deployed) == []


def test_features_missing_after_a_data_version_change(
    deployed: LocalStack, small_round: SyntheticRound, tmp_path: Path, no_secret_anywhere: list[str]
) -> None:
    # The new data lacks 20 columns that the models were trained on.
    table = pq.read_table(small_round.live_path)
    gone = [f"feature_{i:04d}" for i in range(40, 60)]
    pq.write_table(table.drop_columns(gone), tmp_path / "live.parquet")
    deployed.sandbox.add_dataset("v5.3/live.parquet", tmp_path / "live.parquet")
    failed_run(no_secret_anywhere)
    report = reports(deployed)[-1]
    assert line(report, "demo_catboost")["error"] == (
        "model 'demo_catboost': 20 of its 60 features are not in live.parquet of data version v5.3: "
        "feature_0040, feature_0041, feature_0042, feature_0043, feature_0044 and 15 more"
    )
    assert (
        "features are not in live.parquet of data version v5.3"
        in line(report, "demo_lightgbm")["error"]
    )
    assert line(report, "demo_onnx")["status"] == "submitted"  # its columns are all still there
    assert [s.model_name for s in deployed.sandbox.submissions] == ["demo_onnx"]


def test_features_with_missing_values_are_filled_and_submitted(
    deployed: LocalStack, tmp_path: Path
) -> None:
    holes = write_round(tmp_path / "holes", rows=400, n_features=60, missing_fraction=0.05, seed=12)
    deployed.sandbox.add_dataset_dir("v5.3", holes.directory)
    fire_timer()
    assert reports(deployed)[-1]["status"] == "succeeded"
    assert len(deployed.sandbox.submissions) == 4


# --- The Numerai API ----------------------------------------------------------------


def test_an_api_down_for_good_fails_the_run_with_the_reason(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    deployed.sandbox.faults.api_5xx_forever = True
    message = failed_run(no_secret_anywhere)
    assert "Numerai API did not answer rounds after 3 tries (last: HTTP 503)" in message
    assert reports(deployed)[-1]["status"] == "failed"


def test_the_round_ending_during_the_run_uploads_nothing(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    def next_round_opens(entry: str) -> None:
        if entry.endswith("live.parquet"):
            deployed.sandbox.open_new_round()

    deployed.sandbox.on_request = next_round_opens
    failed_run(no_secret_anywhere)
    report = reports(deployed)[-1]
    for name in MODELS:
        assert line(report, name)["error"] == (
            f"model '{name}': round 1200 ended during the run (round 1201 is current); "
            "its predictions are archived but were not uploaded"
        )
    assert uploads(deployed) == []
    assert results(deployed).archive.read(1200, "demo_catboost") is not None


def test_the_round_closing_for_staking_during_the_run_submits_late_only_when_asked(
    deployed: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def staking_closes(entry: str) -> None:
        if entry.endswith("live.parquet"):
            deployed.sandbox.close_round()

    monkeypatch.setenv("SUBMIT_LATE", "true")
    deployed.sandbox.on_request = staking_closes
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "succeeded"
    assert "closed for staking during the run; the submissions are late" in report["reason"]
    assert len(deployed.sandbox.submissions) == 4
    assert (
        "after the staking close (SUBMIT_LATE=true): scored, not staked"
        in line(report, "demo_onnx")["warnings"][-1]
    )


def test_the_round_closing_for_staking_during_the_run_archives_and_uploads_nothing_by_default(
    deployed: LocalStack,
) -> None:
    def staking_closes(entry: str) -> None:
        if entry.endswith("live.parquet"):
            deployed.sandbox.close_round()

    deployed.sandbox.on_request = staking_closes
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    assert deployed.sandbox.submissions == []
    missed = line(report, "demo_onnx")
    assert missed["status"] == "missed"
    assert missed["error"].startswith("model 'demo_onnx': round 1200 closed for staking at ")
    assert (
        "its predictions are archived (predictions/round-1200/demo_onnx.csv) but were not uploaded: "
        "set SUBMIT_LATE=true" in missed["error"]
    )
    assert (
        report["reason"]
        == "4 missed the round's staking window: demo_catboost, demo_lightgbm, demo_onnx, demo_upload"
    )


# --- The timer ----------------------------------------------------------------------


def test_two_timers_at_once_one_works_the_other_ends_cleanly(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMERAI_TIMEOUT_SECONDS", "60")  # the first run waits for its held answer
    first_inside = threading.Event()
    second_done = threading.Event()

    def hold_the_first_run(entry: str) -> None:
        if entry == "graphql rounds" and not first_inside.is_set():
            first_inside.set()
            second_done.wait(60)

    deployed.sandbox.on_request = hold_the_first_run
    first = threading.Thread(target=fire_timer)
    first.start()
    assert first_inside.wait(30)
    fire_timer()  # the second firing, while the first holds the lock
    second_done.set()
    first.join(60)

    statuses = sorted((r["status"], r["reason"] or "") for r in reports(deployed))
    assert statuses[0][0] == "locked"  # it waited out one lease, and the first run kept renewing
    assert "another run held the lock 'locks/scheduled-run' for all of the 20 s" in statuses[0][1]
    assert statuses[1][0] == "succeeded"
    assert len(deployed.sandbox.submissions) == 4 and len(results(deployed).ledger.records()) == 4


def test_a_past_due_timer_runs_and_says_so(deployed: LocalStack) -> None:
    fire_timer(past_due=True)
    report = reports(deployed)[-1]
    assert report["past_due"] is True and report["status"] == "succeeded"


def test_a_run_killed_after_archiving_is_finished_by_the_next_without_predicting_again(
    deployed: LocalStack, tmp_path: Path
) -> None:
    release = threading.Event()

    def hold_uploads(entry: str) -> None:
        if entry == "graphql submission_upload_auth":
            release.wait(60)

    deployed.sandbox.on_request = hold_uploads
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    victim = subprocess.Popen(
        [sys.executable, "-m", "shared", "run", "--submit"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while "graphql submission_upload_auth" not in deployed.sandbox.requests_log:
            assert time.monotonic() < deadline and victim.poll() is None
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)  # mid-run: everything archived, nothing uploaded
        victim.wait(30)
    finally:
        release.set()
    deployed.sandbox.on_request = None
    assert deployed.sandbox.submissions == []
    live_downloads = downloads(deployed).count("GET /files/v5.3/live.parquet")

    fire_timer()  # waits until the killed run's lease lapses (15 s), then finishes its work

    assert (
        downloads(deployed).count("GET /files/v5.3/live.parquet") == live_downloads
    )  # nothing predicted again
    finished = next(r for r in reports(deployed) if r["status"] == "succeeded")
    assert all(m["from_archive"] and m["status"] == "submitted" for m in finished["models"])
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == MODELS
    for submission in deployed.sandbox.submissions:  # the archived bytes, uploaded as they were
        assert (
            submission.csv == results(deployed).archive.read(1200, submission.model_name).encode()
        )
    assert len(results(deployed).ledger.records(1200)) == 4
    fire_timer()
    assert len(deployed.sandbox.submissions) == 4  # and never twice


# --- Models that misbehave ----------------------------------------------------------


def test_models_that_predict_badly_are_reported_and_the_good_one_submitted(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_secret_anywhere: list[str],
) -> None:
    import cloudpickle

    small = len(small_round.feature_sets["small"])
    write_onnx_linear(tmp_path / "nan.onnx", np.full(small, np.nan), 0.0)
    write_onnx_linear(tmp_path / "flat.onnx", np.zeros(small), 0.5)
    write_onnx_linear(tmp_path / "steep.onnx", np.full(small, 10.0), 0.0)

    def too_few(live_features, live_benchmark_models=None):
        return (
            live_features[["feature_0000"]]
            .iloc[:100]
            .rank(pct=True)
            .set_axis(["prediction"], axis=1)
        )

    def slow(live_features, live_benchmark_models=None):
        import time as clock

        clock.sleep(30)
        return live_features[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    (tmp_path / "few.pkl").write_bytes(cloudpickle.dumps(too_few))
    (tmp_path / "slow.pkl").write_bytes(cloudpickle.dumps(slow))
    entries = [
        {"name": "nan_model", "file": "nan.onnx", "format": "onnx", "features": "small"},
        {"name": "flat_model", "file": "flat.onnx", "format": "onnx", "features": "small"},
        {
            "name": "steep_model",
            "file": "steep.onnx",
            "format": "onnx",
            "features": "small",
            "output": "raw",
        },
        {"name": "few_rows", "file": "few.pkl", "format": "numerai_pickle", "trust_pickle": True},
        {
            "name": "slow_model",
            "file": "slow.pkl",
            "format": "numerai_pickle",
            "trust_pickle": True,
        },
        {"name": "demo_onnx", "file": "demo_onnx.onnx", "format": "onnx", "features": "small"},
    ]
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("models.json", json.dumps({"models": entries}), overwrite=True)
    for entry in entries[:-1]:
        container.upload_blob(
            entry["file"], (tmp_path / entry["file"]).read_bytes(), overwrite=True
        )
        deployed.sandbox.models[entry["name"]] = entry["name"] + "-id"
    monkeypatch.setenv("MODEL_TIME_LIMIT_SECONDS", "4")

    started = time.monotonic()
    failed_run(no_secret_anywhere)
    assert time.monotonic() - started < 25  # the slow model (30 s) was not waited for
    report = reports(deployed)[-1]
    assert (
        line(report, "nan_model")["error"]
        == "model 'nan_model': predicted NaN or infinity for 503 of 503 rows"
    )
    assert "predictions are (nearly) equal" in line(report, "flat_model")["error"]
    assert "predictions lie outside [0, 1]" in line(report, "steep_model")["error"]
    assert (
        "predictions cover 100 of 503 live ids (403 missing, 0 not in this round)"
        in line(report, "few_rows")["error"]
    )
    assert "stopped after its limit of 4 s while predicting" in line(report, "slow_model")["error"]
    for rejected in (
        "nan_model",
        "flat_model",
        "steep_model",
        "few_rows",
    ):  # kept for inspection, never uploaded
        assert (
            line(report, rejected)["predictions_blob"]
            == f"predictions/round-1200/{rejected}.rejected.csv"
        )
    assert [s.model_name for s in deployed.sandbox.submissions] == ["demo_onnx"]


# --- Issue #9, HTTP test run, manifest size, work folders: faults 9, 10, 16 ---------


def test_9_a_test_run_body_it_cannot_use_is_answered_400_saying_why(deployed: LocalStack) -> None:
    nested = (
        b"[" * 8000 + b"]" * 8000
    )  # under the 16 KiB limit, deeper than Python's recursion limit
    cases = [
        (nested, "nested"),
        (b'{"models": ' + nested[:-2_000] + b"}", "nested"),
        (
            b"{" + b" " * 20_000 + b"}",
            "the request body is 20002 bytes; at most 16384 are accepted",
        ),
        (json.dumps({"models": 5}).encode(), "'models' must be a list of model names"),
        (json.dumps({"models": [1]}).encode(), "'models' must be a list of model names"),
        (json.dumps({"models": {"a": 1}}).encode(), "'models' must be a list of model names"),
        (json.dumps({"models": None}).encode(), "'models' must be a list of model names"),
        (json.dumps({"models": ["a" * 5000]}).encode(), "not a Numerai model name"),
        (b'{"models": ["demo_\xff\xfe"]}', "the request body is not UTF-8"),
        (json.dumps({"models": ["demo_onnx"]}).encode("utf-16"), "the request body is not UTF-8"),
    ]
    for body, reason in cases:
        response = post_test_run(body)
        assert response.status_code == 400, body[:40]
        assert response.mimetype == "application/json"
        error = json.loads(response.get_body())["error"]
        assert reason in error and len(error) < 300
    long_query = post_test_run(params={"models": "x" * 10_000})
    assert long_query.status_code == 400
    assert "not a Numerai model name" in json.loads(long_query.get_body())["error"]
    # Refused before any work: no report, nothing asked of Numerai.
    assert not deployed.blob_service.get_container_client(deployed.results_container).exists()
    assert deployed.sandbox.requests_log == []


def test_9_an_unexpected_error_before_the_run_is_answered_500_with_a_saved_report(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: bytes, query: dict) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr("shared.triggers.test_run.parse_model_selection", broken)
    response = post_test_run(json.dumps({"models": ["demo_onnx"]}).encode())
    assert response.status_code == 500
    answered = json.loads(response.get_body())
    assert answered["status"] == "failed" and answered["mode"] == "test"
    assert answered["reason"] == "unexpected error: KeyError: 'a bug of ours'"
    [saved] = reports(deployed)
    assert saved["run_id"] == answered["run_id"] and saved["reason"] == answered["reason"]
    assert deployed.sandbox.requests_log == []


def test_9_an_unexpected_error_at_the_start_of_a_run_is_reported_not_raised(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, no_secret_anywhere: list[str]
) -> None:
    def broken(environ: object = None) -> bool:
        # What a malformed APPLICATIONINSIGHTS_CONNECTION_STRING makes azure-monitor raise.
        raise ValueError("Invalid instrumentation key. It should be a valid UUID.")

    monkeypatch.setattr("shared.run.job.configure_telemetry", broken)
    assert "unexpected error: ValueError: Invalid instrumentation key" in failed_run(
        no_secret_anywhere
    )
    response = post_test_run()
    assert response.status_code == 500
    scheduled, test = reports(deployed)
    assert test["run_id"] == json.loads(response.get_body())["run_id"]
    for saved in (scheduled, test):
        assert (
            saved["reason"]
            == "unexpected error: ValueError: Invalid instrumentation key. It should be a valid UUID."
        )


def test_10_a_manifest_over_its_size_limit_is_refused_unread(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    huge = {
        "models": [
            {"name": "demo_onnx", "file": "a" * 2_000_000, "format": "onnx", "features": "small"}
        ]
    }
    text = json.dumps(huge)
    container.upload_blob("models.json", text, overwrite=True)
    message = failed_run(no_secret_anywhere)
    assert (
        f"blob 'models.json' in container '{deployed.models_container}' is {len(text)} bytes; "
        "at most 1048576 are read"
    ) in message
    report = reports(deployed)[-1]
    results_container = deployed.blob_service.get_container_client(deployed.results_container)
    assert (
        results_container.get_blob_client(f"reports/{report['run_id']}.json")
        .get_blob_properties()
        .size
        < 20_000
    )
    assert downloads(deployed) == [] and uploads(deployed) == []

    huge["models"][0]["file"] = "a" * 2000
    container.upload_blob("models.json", json.dumps(huge), overwrite=True)
    message = failed_run(no_secret_anywhere)
    assert (
        f"{deployed.models_container}/models.json: model #1 ('demo_onnx'): field 'file': "
        "String should have at most 1024 characters"
    ) in message
    assert len(message) < 1000


def test_16_work_folders_of_killed_runs_are_removed_but_never_a_live_runs(
    deployed: LocalStack, tmp_path: Path
) -> None:
    rounds = Path(os.environ["WORK_DIR"]) / "rounds"
    killed, older, live = (
        rounds / name
        for name in (
            "20240101T000000000000Z-scheduled-killed01",
            "20240101T000000000000Z-scheduled-older001",
            "20240101T000000000000Z-test-alive0001",
        )
    )
    for folder in (killed, older, live):
        (folder / "workers" / "demo_onnx").mkdir(parents=True)
        (folder / "live.parquet").write_bytes(b"x" * 1000)
    (killed / LOCK_FILE).touch()  # its holder died, and the kernel released the lock
    # `older` has no lock file at all, as a version before the lock left it.
    hold = (
        "import fcntl, sys, time\n"
        "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(300)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(live / LOCK_FILE)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        fire_timer()
        assert not killed.exists() and not older.exists()
        assert (live / "live.parquet").read_bytes() == b"x" * 1000  # another run still works there
        assert [p.name for p in rounds.iterdir() if p.is_dir()] == [
            live.name
        ]  # this run's own is gone too
    finally:
        holder.kill()
        holder.wait()
    assert reports(deployed)[-1]["status"] == "succeeded"


# --- Bad data and unchecked widths (issue #9: faults 13 and 15) -----------------------


def test_a_feature_outside_the_bins_fails_the_models_that_take_it(
    deployed: LocalStack, small_round: SyntheticRound, tmp_path: Path, no_secret_anywhere: list[str]
) -> None:
    # Numerai's features are bins 0..4; 127 is what a broken int8 encoding or a sentinel leaves.
    column = next(
        c for c in small_round.feature_sets["all"] if c not in small_round.feature_sets["medium"]
    )
    table = pq.read_table(small_round.live_path)
    position = table.schema.get_field_index(column)
    table = table.set_column(position, column, pa.array(np.full(len(table), 127, np.int8)))
    pq.write_table(table, tmp_path / "live.parquet")
    deployed.sandbox.add_dataset("v5.3/live.parquet", tmp_path / "live.parquet")
    failed_run(no_secret_anywhere)
    report = reports(deployed)[-1]
    expected = f"1 of its 60 features has values outside 0–4 in live.parquet of data version v5.3: {column} (127)"
    assert line(report, "demo_catboost")["error"] == f"model 'demo_catboost': {expected}"
    # The upload pickle gets the file as it is, as on Numerai; it never reads that column.
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == [
        "demo_lightgbm",
        "demo_onnx",
        "demo_upload",
    ]


def test_an_onnx_model_of_open_width_is_checked_or_reported_unchecked(
    deployed: LocalStack, small_round: SyntheticRound, tmp_path: Path, no_secret_anywhere: list[str]
) -> None:
    write_onnx_linear(tmp_path / "ten.onnx", np.linspace(-1, 1, 10), 0.0, open_width=True)
    write_onnx_stump(tmp_path / "stump.onnx", feature=3)
    columns = small_round.feature_sets["all"][:24]
    entries = [
        {"name": "made_for_ten", "file": "ten.onnx", "format": "onnx", "features": columns},
        {"name": "stump", "file": "stump.onnx", "format": "onnx", "features": columns},
    ]
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("models.json", json.dumps({"models": entries}), overwrite=True)
    for entry in entries:
        container.upload_blob(
            entry["file"], (tmp_path / entry["file"]).read_bytes(), overwrite=True
        )
        deployed.sandbox.models[entry["name"]] = entry["name"] + "-id"
    failed_run(no_secret_anywhere)
    report = reports(deployed)[-1]
    assert line(report, "made_for_ten")["error"] == (
        "model 'made_for_ten': 'ten.onnx' takes 10 features but its manifest entry gives 24; check 'features'"
    )
    warning = (
        "model 'stump': the ONNX model's input width is dynamic and its graph does not say how many "
        "features it takes; the manifest's 24 features were fed unchecked"
    )
    assert line(report, "stump")["status"] == "submitted" and line(report, "stump")["warnings"] == [
        warning
    ]
    assert line(report, "made_for_ten")["warnings"] == []
    assert f"warning: {warning}" in RunReport.from_json(json.dumps(report)).summary()
    assert [s.model_name for s in deployed.sandbox.submissions] == ["stump"]


# --- Secrets never leave (issue #9, fault 11) ---------------------------------------


def test_an_api_error_echoing_the_auth_header_fails_the_run_without_the_key(
    deployed: LocalStack, no_secret_anywhere: list[str]
) -> None:
    # 20 of the fake key's 24 characters: a piece of it, as a real error once held 26 of 64.
    deployed.sandbox.faults.graphql_error_echoing_auth = 20
    message = failed_run(no_secret_anywhere)
    assert (
        "Numerai refused the API keys (NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY) for account"
        in message
    )
    assert "invalid token in header Authorization: Token ***" in message
    report = reports(deployed)[-1]
    assert report["status"] == "failed" and FAKE_SECRET_KEY[:20] not in json.dumps(report)
    assert uploads(deployed) == []


def test_a_model_error_carrying_pieces_of_the_keys_is_redacted_in_report_and_log(
    deployed: LocalStack,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    no_secret_anywhere: list[str],
) -> None:
    import cloudpickle

    endpoint = f"http://127.0.0.1:{deployed.azurite.port}/devstoreaccount1"
    leak = (
        f"BlobEndpoint={endpoint};AccountKey={ACCOUNT_KEY[:30]} "
        f"(sent as {quote(ACCOUNT_KEY[50:], safe='')}) with key {FAKE_SECRET_KEY[2:22]}"
    )

    def leaky(live_features, live_benchmark_models=None):
        raise ConnectionError(f"could not open {leak}")

    (tmp_path / "leaky.pkl").write_bytes(cloudpickle.dumps(leaky))
    entries = [
        {
            "name": "leaky_model",
            "file": "leaky.pkl",
            "format": "numerai_pickle",
            "trust_pickle": True,
        },
        {"name": "demo_onnx", "file": "demo_onnx.onnx", "format": "onnx", "features": "small"},
    ]
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("models.json", json.dumps({"models": entries}), overwrite=True)
    container.upload_blob("leaky.pkl", (tmp_path / "leaky.pkl").read_bytes(), overwrite=True)
    deployed.sandbox.models["leaky_model"] = "leaky_model-id"

    failed_run(no_secret_anywhere)
    readable = f"model 'leaky_model': ConnectionError: could not open BlobEndpoint={endpoint};AccountKey=***"
    assert line(reports(deployed)[-1], "leaky_model")["error"].startswith(readable)
    relayed = [
        r.getMessage() for r in caplog.records if "last lines of its worker's log" in r.getMessage()
    ]
    assert len(relayed) == 1 and readable in relayed[0]
    assert [s.model_name for s in deployed.sandbox.submissions] == ["demo_onnx"]


# --- Issue #9, bounded Numerai calls and downloads: slow, oversized and mis-resumed answers ---

MIB = 1024 * 1024


def the_next_run_gets_the_lock(stack: LocalStack) -> dict:
    """With the faults cleared, a run right after must not be locked out by the one that failed."""
    stack.sandbox.faults.reset()
    fire_timer()
    report = reports(stack)[-1]
    assert "another run holds the lock" not in (report["reason"] or "")
    return report


def test_an_api_answer_that_trickles_is_cut_off_at_the_timeout(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, no_secret_anywhere: list[str]
) -> None:
    # Every socket read gets a byte in time; the whole answer would take 30 s.
    monkeypatch.setenv("NUMERAI_TIMEOUT_SECONDS", "1")
    deployed.sandbox.faults.trickle_graphql_seconds = 30
    started = time.monotonic()
    message = failed_run(no_secret_anywhere)
    assert time.monotonic() - started < 10  # 3 tries of 1 s, not 3 of 30
    expected = (
        "Numerai API did not answer rounds after 3 tries "
        "(last: the answer took longer than NUMERAI_TIMEOUT_SECONDS = 1 s)"
    )
    assert expected in message
    assert reports(deployed)[-1]["reason"] == expected
    assert deployed.sandbox.requests_log == ["graphql rounds"] * 3
    assert the_next_run_gets_the_lock(deployed)["status"] == "succeeded"


def test_a_download_that_trickles_is_cut_off_at_its_timeout(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, no_secret_anywhere: list[str]
) -> None:
    monkeypatch.setenv("NUMERAI_DOWNLOAD_TIMEOUT_SECONDS", "2")
    deployed.sandbox.faults.trickle_download_seconds = 30
    started = time.monotonic()
    message = failed_run(no_secret_anywhere)
    assert time.monotonic() - started < 15
    expected = re.compile(
        r"download of v5\.3/features\.json failed: not complete after "
        r"NUMERAI_DOWNLOAD_TIMEOUT_SECONDS = 2 s \(([1-9]\d*) of (\d+) bytes arrived\)"
    )
    assert expected.search(message)
    report = reports(deployed)[-1]
    arrived, size = map(int, expected.fullmatch(report["reason"]).groups())
    assert arrived < size == deployed.sandbox.datasets["v5.3/features.json"].stat().st_size
    assert all(m["error"] == f"not finished: {report['reason']}" for m in report["models"])
    assert downloads(deployed) == ["GET /files/v5.3/features.json"]
    assert uploads(deployed) == [] and deployed.sandbox.submissions == []
    assert the_next_run_gets_the_lock(deployed)["status"] == "succeeded"


def test_a_resume_the_server_ignores_starts_the_download_over(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployed.sandbox.faults.ignore_range = True
    live_gets: list[str] = []
    downloaded: dict[str, bytes] = {}

    def cut_live_once_then_look(entry: str) -> None:
        if (
            entry == "GET /files/v5.3/live.parquet"
        ):  # the first is cut halfway, the resume gets it whole
            live_gets.append(entry)
            deployed.sandbox.faults.truncate_download = len(live_gets) == 1
        if (
            entry == "graphql submission_upload_auth" and not downloaded
        ):  # the files as the models read them
            for path in (tmp_path / "work" / "rounds").glob(
                "*/data/*/*"
            ):  # a folder per data version
                if path.is_file():
                    downloaded[path.name] = path.read_bytes()

    deployed.sandbox.on_request = cut_live_once_then_look
    fire_timer()
    assert reports(deployed)[-1]["status"] == "succeeded"
    assert len(deployed.sandbox.submissions) == 4
    expected = {p.name: p.read_bytes() for p in small_round.directory.iterdir() if p.is_file()}
    assert {
        name: downloaded.get(name) for name in expected
    } == expected  # exactly, nothing appended
    assert not [name for name in downloaded if name.endswith((".partial", ".temp"))]
    assert live_gets == ["GET /files/v5.3/live.parquet"] * 2
    assert "download of v5.3/live.parquet: the server did not resume at byte" in caplog.text
    the_next_run_gets_the_lock(deployed)


@pytest.mark.parametrize("announced", [True, False], ids=["with-content-length", "without"])
def test_an_oversized_api_answer_is_refused(
    deployed: LocalStack, announced: bool, no_secret_anywhere: list[str]
) -> None:
    deployed.sandbox.faults.pad_graphql_bytes = 40 * MIB
    deployed.sandbox.faults.graphql_without_length = not announced
    started = time.monotonic()
    message = failed_run(no_secret_anywhere)
    assert time.monotonic() - started < 10
    expected = "Numerai API's answer to rounds is over the 32 MiB limit for any answer " + (
        "(it announced 41943040 bytes); refused unread"
        if announced
        else "(it sent more); refused after reading 32 MiB"
    )
    assert expected in message
    assert reports(deployed)[-1]["reason"] == expected
    assert deployed.sandbox.requests_log == [
        "graphql rounds"
    ]  # not asked again: it would not shrink
    assert uploads(deployed) == []
    assert the_next_run_gets_the_lock(deployed)["status"] == "succeeded"
