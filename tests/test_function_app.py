"""The Functions app end to end: real numerapi against the Numerai sandbox, real
azure-storage-blob against Azurite, through the function objects of function_app.py."""

from __future__ import annotations

import io
import json
import os

import pandas as pd
import pytest
from numerai_tools.submissions import validate_submission_numerai

import function_app
from devkit.example_models import MORE_FORMATS_PLAN, write_example_models
from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.errors import RunFailed
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

# Every test here also proves that the fake keys reached no log, console, report or error.
pytestmark = pytest.mark.usefixtures("no_secret_anywhere")


def test_the_timer_submits_every_model_and_the_records_agree(
    deployed: LocalStack, small_round: SyntheticRound
) -> None:
    fire_timer()

    # The round's files are downloaded once for the run, not once per model.
    assert sorted(downloads(deployed)) == [
        "GET /files/v5.3/features.json",
        "GET /files/v5.3/live.parquet",
        "GET /files/v5.3/live_benchmark_models.parquet",
    ]
    received = {s.model_name: s for s in deployed.sandbox.submissions}
    assert sorted(received) == sorted(MODELS)
    for submission in received.values():
        csv = pd.read_csv(io.BytesIO(submission.csv))
        validate_submission_numerai(pd.Series(small_round.ids), csv)
        assert len(csv) == len(small_round.ids)
        assert submission.round == deployed.sandbox.round.number

    [report] = reports(deployed)
    assert report["status"] == "succeeded" and report["mode"] == "scheduled"
    assert report["round_number"] == deployed.sandbox.round.number
    ledger = {
        r.model_name: r for r in results(deployed).ledger.records(deployed.sandbox.round.number)
    }
    for model in report["models"]:
        sandbox_record = received[model["name"]]
        assert model["status"] == "submitted"
        assert model["rows"] == len(small_round.ids)
        assert model["submission_id"] == sandbox_record.id == ledger[model["name"]].submission_id
        assert ledger[model["name"]].model_id == deployed.sandbox.models[model["name"]]
        # The archived CSV is the one that was uploaded.
        archived = results(deployed).archive.read(report["round_number"], model["name"])
        assert archived.encode() == sandbox_record.csv


def test_estimator_pickles_xgboost_and_catboost_files_are_submitted_by_the_timer(
    deployed: LocalStack,
    small_round: SyntheticRound,
    tmp_path,
) -> None:
    models = tmp_path / "more"
    manifest = write_example_models(models, small_round.feature_sets, MORE_FORMATS_PLAN)
    for entry in manifest["models"]:
        if entry["format"] in ("xgboost", "catboost"):
            del entry["features"]  # these files record their feature names
    (models / "models.json").write_text(json.dumps(manifest))
    deployed.deploy(models, small_round)
    fire_timer()
    received = {s.model_name: s for s in deployed.sandbox.submissions}
    assert sorted(received) == sorted(name for name, _, _ in MORE_FORMATS_PLAN)
    for submission in received.values():
        validate_submission_numerai(
            pd.Series(small_round.ids), pd.read_csv(io.BytesIO(submission.csv))
        )
    [report] = reports(deployed)
    assert report["status"] == "succeeded"
    assert all(line["peak_memory_mb"] > 0 for line in report["models"])


def test_a_second_firing_in_the_same_round_uploads_nothing_and_a_new_round_submits_again(
    deployed: LocalStack,
) -> None:
    fire_timer()
    assert len(uploads(deployed)) == 4
    downloaded = len(downloads(deployed))
    fire_timer()
    assert len(uploads(deployed)) == 4
    assert len(downloads(deployed)) == downloaded
    second = reports(deployed)[-1]
    assert second["status"] == "nothing_to_do"
    assert {m["status"] for m in second["models"]} == {"already_submitted"}

    deployed.sandbox.open_new_round()
    fire_timer()
    assert len(uploads(deployed)) == 8
    assert {s.round for s in deployed.sandbox.submissions} == {1200, 1201}
    assert len(results(deployed).ledger.records(1201)) == 4


def test_force_resubmit_submits_again_in_the_same_round(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    fire_timer()
    monkeypatch.setenv("NUMERAI_FORCE_RESUBMIT", "true")
    fire_timer()
    assert len(deployed.sandbox.submissions) == 8


def test_the_http_test_run_uploads_nothing_even_when_asked_and_returns_the_report(
    deployed: LocalStack,
) -> None:
    response = post_test_run(json.dumps({"upload": True, "mode": "scheduled"}).encode())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    report = json.loads(response.get_body())
    assert report["mode"] == "test" and report["status"] == "succeeded"
    assert [m["status"] for m in report["models"]] == ["validated"] * 4
    assert all(
        m["predictions_blob"].startswith(f"test-predictions/round-{report['round_number']}/")
        for m in report["models"]
    )
    assert uploads(deployed) == [] and deployed.sandbox.submissions == []
    assert results(deployed).ledger.records() == []
    assert reports(deployed)[-1]["run_id"] == report["run_id"]


def test_the_http_test_run_can_pick_models_and_refuses_bad_requests(deployed: LocalStack) -> None:
    report = json.loads(post_test_run(params={"models": "demo_onnx"}).get_body())
    assert [m["name"] for m in report["models"]] == ["demo_onnx"]

    for body, reason in [
        (b"not json", "not JSON"),
        (b'["demo_onnx"]', "must be a JSON object"),
        (json.dumps({"models": "demo_onnx"}).encode(), "must be a list of model names"),
        (json.dumps({"models": ["../etc/passwd"]}).encode(), "not a Numerai model name"),
        (b"{" + b" " * 20_000 + b"}", "at most 16384 are accepted"),
    ]:
        response = post_test_run(body)
        assert response.status_code == 400
        assert reason in json.loads(response.get_body())["error"]

    unknown = post_test_run(json.dumps({"models": ["nobody"]}).encode())
    assert unknown.status_code == 500
    assert "'nobody' are not in the manifest" in json.loads(unknown.get_body())["reason"]


def test_the_http_trigger_needs_a_function_key_and_the_timer_is_bound_to_the_setting() -> None:
    bindings = {
        f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()]
        for f in function_app.app.get_functions()
    }
    [http] = [b for b in bindings["test_run"] if b["type"] == "httpTrigger"]
    assert http["authLevel"] == "FUNCTION"
    assert http["methods"] == ["POST"] and http["route"] == "test-run"
    [timer] = bindings["scheduled_submission"]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "%NUMERAI_SCHEDULE%"
    assert timer["useMonitor"] is True
    assert timer["runOnStartup"] is False


def test_one_corrupt_model_fails_the_run_while_the_others_are_submitted(
    deployed: LocalStack,
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("demo_lightgbm.txt", b"tree\nnot really a booster", overwrite=True)
    with pytest.raises(RunFailed, match="1 of 4 models failed: demo_lightgbm"):
        fire_timer()
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == [
        "demo_catboost",
        "demo_onnx",
        "demo_upload",
    ]
    report = reports(deployed)[-1]
    assert report["status"] == "failed"
    broken = line(report, "demo_lightgbm")
    assert broken["status"] == "failed"
    assert "cannot load 'demo_lightgbm.txt' as lightgbm" in broken["error"]
    assert [r.model_name for r in results(deployed).ledger.records()] == [
        "demo_catboost",
        "demo_onnx",
        "demo_upload",
    ]


def test_after_the_window_was_checked_a_closed_round_means_nothing_downloaded_or_uploaded(
    deployed: LocalStack,
) -> None:
    fire_timer()  # in the window: every model submitted
    deployed.sandbox.close_round()
    fire_timer()  # the first run after the close checks what Numerai lists
    after = reports(deployed)[-1]
    assert after["after_window"] is True and after["status"] == "nothing_to_do"
    before = list(deployed.sandbox.requests_log)
    fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "nothing_to_do"
    assert report["reason"] == (
        f"round 1200 is not open for submissions (window {report['round_open_time']} to "
        f"{report['round_close_time']}); run {after['run_id']} already checked what Numerai "
        "lists for it; nothing was downloaded or uploaded"
    )
    later = deployed.sandbox.requests_log[len(before) :]
    assert not [r for r in later if r.startswith(("GET /files", "PUT "))]


def test_a_5xx_that_recovers_is_retried(deployed: LocalStack) -> None:
    deployed.sandbox.faults.api_5xx = 2
    fire_timer()
    assert len(deployed.sandbox.submissions) == 4
    assert reports(deployed)[-1]["status"] == "succeeded"


def test_a_failing_put_is_never_recorded_as_submitted(deployed: LocalStack) -> None:
    deployed.sandbox.faults.put_status = 403
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    for model in report["models"]:
        assert model["status"] == "failed"
        assert (
            "the upload of the predictions was refused (HTTP 403); nothing was submitted"
            in model["error"]
        )
        assert model["predictions_blob"]  # archived all the same
    assert deployed.sandbox.submissions == [] and results(deployed).ledger.records() == []


def test_bad_credentials_give_a_clear_error(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMERAI_SECRET_KEY", "wrong-secret")
    with pytest.raises(
        RunFailed, match=r"Numerai refused the API keys \(NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY\)"
    ):
        fire_timer()
    report = reports(deployed)[-1]
    assert report["status"] == "failed" and "wrong-secret" not in json.dumps(report)


def test_a_manifest_model_unknown_to_the_account_is_named_with_the_accounts_models(
    deployed: LocalStack,
) -> None:
    del deployed.sandbox.models["demo_onnx"]
    with pytest.raises(RunFailed):
        fire_timer()
    assert line(reports(deployed)[-1], "demo_onnx")["error"] == (
        "model 'demo_onnx' is not a Classic model of this Numerai account; "
        "the account has: demo_catboost, demo_lightgbm, demo_upload"
    )
    assert len(deployed.sandbox.submissions) == 3


def test_the_command_line_runs_the_same_job(
    deployed: LocalStack, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli import main

    settings = tmp_path / "local.settings.json"
    values = {name: os.environ[name] for name in deployed.environ(tmp_path / "work")}
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    for name in values:
        monkeypatch.delenv(name)

    assert main(["run", "--test-mode", "--settings", str(settings), "--models", "demo_onnx"]) == 0
    assert deployed.sandbox.submissions == []
    assert main(["run", "--settings", str(settings)]) == 0
    assert len(deployed.sandbox.submissions) == 4
    deployed.sandbox.faults.put_status = 500
    deployed.sandbox.open_new_round()
    assert main(["run", "--settings", str(settings), "--models", "demo_onnx"]) == 1


def test_a_test_run_never_replaces_the_archive_of_what_was_uploaded(deployed: LocalStack) -> None:
    fire_timer()
    uploaded = {s.model_name: s.csv for s in deployed.sandbox.submissions}
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("demo_onnx.onnx", b"broken", overwrite=True)  # the test run now differs
    post_test_run()
    for name, csv in uploaded.items():
        assert results(deployed).archive.read(1200, name).encode() == csv


def test_a_graphql_error_is_not_retried(deployed: LocalStack) -> None:
    deployed.sandbox.faults.graphql_error = "Model does not exist or is not yours"
    before = len(deployed.sandbox.requests_log)
    with pytest.raises(
        RunFailed, match="Numerai API refused rounds: Model does not exist or is not yours"
    ):
        fire_timer()
    assert deployed.sandbox.requests_log[before:] == ["graphql rounds"]
