"""A participant's first hour on the command line: `models add|list|remove|check` and `doctor`,
against the real clients, Azurite and the Numerai sandbox (issue #22)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.cli import main
from tests.support import MODELS, reports

pytestmark = pytest.mark.usefixtures("no_secret_anywhere")


@pytest.fixture(autouse=True)
def _deployment_runs_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    # The example pickles are made by the Python running the tests (3.11 or 3.12 in CI).
    monkeypatch.setenv("PYTHON_VERSION", f"3.{sys.version_info.minor}")


def manifest(stack: LocalStack) -> dict:
    container = stack.blob_service.get_container_client(stack.models_container)
    return json.loads(container.download_blob("models.json").readall())


def blob_exists(stack: LocalStack, name: str) -> bool:
    return stack.blob_service.get_blob_client(stack.models_container, name).exists()


def test_models_add_tells_the_format_uploads_and_writes_the_entry(
    deployed: LocalStack, example_models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A second LightGBM model from the same trained file, under another blob name.
    code = main(
        ["models", "add", str(example_models / "demo_lightgbm.txt"), "--name", "second_gbm",
         "--blob", "gbm/second.txt", "--data-version", "v5.3"]
    )  # fmt: skip
    assert code == 0, caplog.text
    entry = manifest(deployed)["models"][-1]
    assert entry == {
        "name": "second_gbm",
        "file": "gbm/second.txt",
        "format": "lightgbm",
        "data_version": "v5.3",
    }
    assert blob_exists(deployed, "gbm/second.txt")
    assert '"format": "lightgbm"' in caplog.text  # the entry is printed

    caplog.clear()
    assert main(["models", "list"]) == 0
    rows = [r.getMessage() for r in caplog.records if r.name == "shared.commands.models"]
    assert [row.split()[0] for row in rows] == [*MODELS, "second_gbm"]
    second = rows[-1]
    size = (example_models / "demo_lightgbm.txt").stat().st_size
    assert f"{size:,} bytes" in second and "ETag" in second and "never submitted" in second

    caplog.clear()
    assert main(["models", "remove", "second_gbm"]) == 0
    assert [e["name"] for e in manifest(deployed)["models"]] == MODELS
    assert not blob_exists(deployed, "gbm/second.txt")


def test_models_add_refuses_what_a_run_would_refuse_and_uploads_nothing(
    deployed: LocalStack, example_models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = manifest(deployed)
    # An ONNX file records no feature names: its entry needs `features`.
    code = main(["models", "add", str(example_models / "demo_onnx.onnx"), "--name", "bare_onnx",
                 "--blob", "bare.onnx"])  # fmt: skip
    assert code == 2
    assert "field 'features' is required for format 'onnx'" in caplog.text
    assert not blob_exists(deployed, "bare.onnx") and manifest(deployed) == before
    # A LightGBM file declared ONNX would fail in its worker.
    code = main(["models", "add", str(example_models / "demo_lightgbm.txt"), "--name", "x",
                 "--format", "onnx", "--features", "small", "--blob", "x.onnx"])  # fmt: skip
    assert code == 2
    assert "'x.onnx' is declared \"onnx\" but looks like a LightGBM text model" in caplog.text
    assert not blob_exists(deployed, "x.onnx") and manifest(deployed) == before
    # A pickle's bytes do not say which of the two pickle formats it is.
    caplog.clear()
    pickle = next(example_models.glob("demo_upload.*"))
    assert main(["models", "add", str(pickle), "--name", "p"]) == 2
    assert "--format sklearn" in caplog.text and "--format numerai_pickle" in caplog.text


def test_models_check_runs_the_round_as_the_timer_would_and_uploads_nothing(
    deployed: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["models", "check", "--models", "demo_lightgbm"]) == 0, caplog.text
    assert deployed.sandbox.submissions == []
    report = reports(deployed)[-1]
    assert report["mode"] == "test" and report["round_number"] == 1200
    assert [m["status"] for m in report["models"]] == ["validated"]
    assert any("live.parquet" in r for r in deployed.sandbox.requests_log)


def test_doctor_passes_a_healthy_deployment(
    deployed: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["doctor"]) == 0, caplog.text
    assert "FAIL" not in caplog.text
    assert "Numerai keys: accepted, scopes upload_submission" in caplog.text
    assert "ready to run" in caplog.text


def test_doctor_names_every_problem_at_once(
    deployed: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    deployed.sandbox.key_scopes = ["read_user_info"]
    deployed.sandbox.models.pop("demo_onnx")
    deployed.blob_service.get_blob_client(
        deployed.models_container, "demo_lightgbm.txt"
    ).delete_blob()
    assert main(["doctor"]) == 1
    failed = [message for message in caplog.messages if message.startswith("FAIL")]
    assert len(failed) == 3, caplog.messages
    assert "file 'demo_lightgbm.txt' is not in container" in failed[0]
    assert "the key may not upload (its scopes: read_user_info)" in failed[1]
    assert "model 'demo_onnx': not a model of this Numerai account" in failed[2]


def test_doctor_reports_every_setting_at_fault_in_one_message(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NUMERAI_PUBLIC_ID")
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    monkeypatch.delenv("MODELS_STORAGE_CONNECTION_STRING")
    assert main(["doctor"]) == 1
    failed = [message for message in caplog.messages if message.startswith("FAIL")]
    assert len(failed) == 1, caplog.messages
    assert "3 settings need fixing" in failed[0]


def test_predict_downloads_the_round_of_each_data_version_from_numerai(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployed.sandbox.add_dataset_dir("v5.2", small_round.directory)
    models = tmp_path / "models"
    shutil.copytree(example_models, models)
    document = json.loads((models / "models.json").read_text())
    document["models"][1]["data_version"] = "v5.2"  # demo_lightgbm
    (models / "models.json").write_text(json.dumps(document))
    # Public files: no keys and no storage needed.
    for name in ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY", "MODELS_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name)
    out = tmp_path / "out"
    code = main(
        ["predict", "--round-from-numerai", "--data", str(tmp_path / "round"),
         "--manifest", str(models / "models.json"), "--out", str(out),
         "--models", "demo_lightgbm,demo_onnx"]
    )  # fmt: skip
    assert code == 0, caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert [(m["name"], m["ok"]) for m in summary["models"]] == [
        ("demo_lightgbm", True),
        ("demo_onnx", True),
    ]
    fetched = [r for r in deployed.sandbox.requests_log if r.startswith("GET /files/")]
    assert sorted(fetched) == [
        "GET /files/v5.2/features.json",
        "GET /files/v5.2/live.parquet",
        "GET /files/v5.3/features.json",
        "GET /files/v5.3/live.parquet",
    ]
    assert (tmp_path / "round" / "round-1200" / "v5.2" / "live.parquet").exists()


def test_doctor_names_a_pickle_of_another_python_than_the_deployments(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The example upload pickle is made by the Python running the tests; the deployment runs another.
    ours = sys.version_info.minor
    other = 12 if ours == 11 else 11
    monkeypatch.setenv("PYTHON_VERSION", f"3.{other}")  # over the fixture's
    assert main(["doctor"]) == 1
    failed = [message for message in caplog.messages if message.startswith("FAIL")]
    assert failed == [
        f"FAIL  model 'demo_upload': 'demo_upload.pkl' was pickled on Python 3.{ours}, and the "
        f"deployment runs 3.{other} (PYTHON_VERSION); set PYTHON_VERSION=3.{ours} (azd env set "
        f"PYTHON_VERSION 3.{ours}) or save the model on 3.{other}"
    ]


def test_doctor_names_a_model_whose_format_the_package_leaves_out(
    deployed: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before a deployment built without CatBoost fails demo_catboost at every run."""
    monkeypatch.setenv("PACKAGE_FORMATS", "lightgbm,onnx,numerai_pickle")
    assert main(["doctor"]) == 1
    failed = [message for message in caplog.messages if message.startswith("FAIL")]
    assert failed == [
        "FAIL  model 'demo_catboost': it is catboost, and PACKAGE_FORMATS=lightgbm,"
        "numerai_pickle,onnx builds the deployment without CatBoost: add catboost to "
        "PACKAGE_FORMATS and deploy again"
    ]
