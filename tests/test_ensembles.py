"""Ensembles, neutralization and the benchmark check, through the job against Azurite and the Numerai sandbox.

The expected predictions are computed here from the archived member predictions with
pandas and numerai-tools directly, not with the app's own post-processing functions.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from azure.functions.queue import QueueMessage as FunctionMessage
from azure.storage.queue import QueueClient
from numerai_tools.scoring import neutralize

import function_app
from devkit.local_stack import DATA_VERSION, LocalStack
from devkit.synthetic import SyntheticRound
from shared.data.benchmarks import MAIN_BENCHMARK
from shared.errors import RunFailed
from shared.executors.queue.messages import TaskMessage, TaskQueue
from tests.support import deliver, fire_timer, line, post_test_run, reports, results, task_queue

ENSEMBLES = [
    {
        "name": "ens_a",
        "members": {"demo_lightgbm": 2, "demo_onnx": 1},
        "neutralize": {"proportion": 0.5, "features": "small"},
    },
    {"name": "ens_b", "members": {"demo_lightgbm": 1, "demo_catboost": 1}},
]

# What a scheduled run of the ensembles' fleet submits: never a member marked not to submit.
SUBMITTED = ["demo_catboost", "demo_onnx", "demo_upload", "ens_a", "ens_b"]


def deploy_with(
    stack: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    change: dict[str, dict],
    extra: list[dict],
) -> None:
    """Deploy the example models with some entries changed (name → fields) and entries added."""
    models = tmp_path / "with-ensembles"
    shutil.copytree(example_models, models, dirs_exist_ok=True)
    manifest = json.loads((models / "models.json").read_text())
    manifest["models"] = [{**m, **change.get(m["name"], {})} for m in manifest["models"]] + extra
    (models / "models.json").write_text(json.dumps(manifest))
    stack.deploy(models, small_round)


def archived(stack: LocalStack, folder: str, round_number: int, name: str) -> pd.Series:
    text = results(stack).archive.read(round_number, name, folder)
    assert text is not None, f"no {folder} for {name}"
    return pd.read_csv(io.StringIO(text), index_col="id")["prediction"]


def worker_runs(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(r.getMessage().startswith(f"model {name}: worker finished") for r in caplog.records)


@pytest.fixture
def with_ensembles(
    deployed: LocalStack, small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> LocalStack:
    deploy_with(
        deployed,
        small_round,
        example_models,
        tmp_path,
        {"demo_lightgbm": {"submit": False}},
        ENSEMBLES,
    )
    deployed.sandbox.models.pop(
        "demo_lightgbm", None
    )  # a member never submitted need not be a Numerai model
    return deployed


def test_a_test_run_predicts_each_member_once_and_combines_and_neutralizes_as_numerai_tools_does(
    with_ensembles: LocalStack,
    small_round: SyntheticRound,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    answer = post_test_run()
    report = json.loads(answer.get_body())
    assert answer.status_code == 200, report
    assert line(report, "demo_lightgbm")["status"] == "predicted"
    for name in ("demo_onnx", "demo_catboost", "ens_a", "ens_b"):
        assert line(report, name)["status"] == "validated", line(report, name)
    assert worker_runs(caplog, "demo_lightgbm") == 1  # two ensembles use it

    round_number = report["round_number"]
    lgbm, onnx = (
        archived(with_ensembles, "test-predictions", round_number, n)
        for n in ("demo_lightgbm", "demo_onnx")
    )
    blended = (2 / 3) * lgbm.rank(pct=True) + (1 / 3) * onnx.loc[lgbm.index].rank(pct=True)
    live = pd.read_parquet(small_round.live_path)  # the synthetic round keeps the ids as its index
    small = live[small_round.feature_sets["small"]].loc[lgbm.index].fillna(2.0).astype(float)
    expected = neutralize(blended.rank(pct=True).to_frame(), small, 0.5).iloc[:, 0].rank(pct=True)
    actual = archived(with_ensembles, "test-predictions", round_number, "ens_a")
    np.testing.assert_allclose(
        actual.loc[expected.index].to_numpy(), expected.to_numpy(), atol=1e-6
    )


def test_a_scheduled_run_submits_the_ensembles_and_never_a_member_marked_not_to_submit(
    with_ensembles: LocalStack,
) -> None:
    fire_timer()
    [report] = reports(with_ensembles)
    assert report["status"] == "succeeded", report
    assert sorted(s.model_name for s in with_ensembles.sandbox.submissions) == SUBMITTED
    uploaded = {s.model_name: s.csv.decode() for s in with_ensembles.sandbox.submissions}
    stored = results(with_ensembles).archive.read(report["round_number"], "ens_b")
    assert uploaded["ens_b"] == stored
    assert line(report, "demo_lightgbm")["status"] == "predicted"


def test_an_ensemble_whose_member_failed_fails_naming_it_and_the_rest_is_submitted(
    with_ensembles: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(example_models, broken)
    (broken / "demo_onnx.onnx").write_bytes(b"not an onnx graph")
    deploy_with(
        with_ensembles,
        small_round,
        broken,
        tmp_path,
        {"demo_lightgbm": {"submit": False}},
        ENSEMBLES,
    )
    with pytest.raises(RunFailed):
        fire_timer()
    [report] = reports(with_ensembles)
    assert (
        line(report, "ens_a")["error"]
        == "ensemble 'ens_a': member 'demo_onnx' failed, so the ensemble was not made"
    )
    assert line(report, "ens_b")["status"] == "submitted"


def test_a_neutralization_set_missing_from_the_round_fails_the_entry_naming_the_set(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    deploy_with(
        deployed,
        small_round,
        example_models,
        tmp_path,
        {"demo_onnx": {"neutralize": {"proportion": 1.0, "features": "v6_medium"}}},
        [],
    )
    report = json.loads(post_test_run().get_body())
    error = line(report, "demo_onnx")["error"]
    assert error.startswith(
        "model 'demo_onnx': neutralization failed: model 'demo_onnx': neutralize.features "
        "'v6_medium' is not a feature set of this round's features.json; it has: "
    )
    assert results(deployed).archive.read(
        report["round_number"], "demo_onnx.rejected", "test-predictions"
    )


def benchmark_like(
    stack: LocalStack, small_round: SyntheticRound, tmp_path: Path, predictions: pd.Series
) -> None:
    """Serve a round whose main benchmark column (v5.3's, the default) follows `predictions`, noisily."""
    directory = tmp_path / "round-with-benchmark"
    shutil.copytree(small_round.directory, directory, dirs_exist_ok=True)
    noise = np.random.default_rng(3).normal(0, 0.1, len(predictions))
    frame = pd.DataFrame(
        {MAIN_BENCHMARK[DATA_VERSION]: predictions.to_numpy() + noise}, index=predictions.index
    )
    frame.to_parquet(directory / "live_benchmark_models.parquet")
    stack.sandbox.add_dataset_dir(DATA_VERSION, directory)


def test_the_gate_holds_back_a_model_fed_shuffled_columns(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    gate = {"max_benchmark_corr_drop": 0.3}
    deploy_with(deployed, small_round, example_models, tmp_path, {"demo_onnx": gate}, [])
    first = json.loads(post_test_run().get_body())
    benchmark_like(
        deployed,
        small_round,
        tmp_path,
        archived(deployed, "test-predictions", first["round_number"], "demo_onnx"),
    )
    fire_timer()  # round N: the model as trained
    usual = line(reports(deployed)[-1], "demo_onnx")
    assert usual["status"] == "submitted" and usual["benchmark_corr"] > 0.8

    deployed.sandbox.open_new_round()
    shuffled = {
        **gate,
        "features": small_round.feature_sets["small"][::-1],
    }  # same columns, wrong order
    deploy_with(deployed, small_round, example_models, tmp_path, {"demo_onnx": shuffled}, [])
    with pytest.raises(RunFailed):
        fire_timer()
    report = reports(deployed)[-1]
    gated = line(report, "demo_onnx")
    assert gated["status"] == "gated"
    assert (
        gated["benchmark_corr"] < 0.5 and gated["benchmark_corr_median"] == usual["benchmark_corr"]
    )
    assert gated["error"].startswith(
        f"model 'demo_onnx': correlation with the benchmark fell from {usual['benchmark_corr']:.2f}"
    )
    assert gated["error"].endswith("were the model's features changed?")
    assert "held back by the benchmark check: demo_onnx" in report["reason"]
    assert [s.round for s in deployed.sandbox.submissions if s.model_name == "demo_onnx"] == [
        first["round_number"]
    ]
    assert (
        results(deployed).archive.read(report["round_number"], "demo_onnx") is not None
    )  # archived


def test_a_benchmark_column_missing_from_the_round_is_a_warning_naming_the_setting(
    deployed: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCHMARK_MODEL", "v99_nothing")
    report = json.loads(post_test_run().get_body())
    assert report["status"] == "succeeded"
    warning = line(report, "demo_onnx")["warnings"][-1]
    assert warning.startswith(
        "model 'demo_onnx': the benchmark check could not run: the round's "
        "live_benchmark_models.parquet has no column 'v99_nothing' (BENCHMARK_MODEL); it has: "
    )
    assert line(report, "demo_onnx")["benchmark_corr"] is None


def test_in_queue_mode_an_ensemble_waits_for_its_members_and_is_submitted_once(
    with_ensembles: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    fire_timer()
    [planned] = reports(with_ensembles)
    assert {m["name"] for m in planned["models"]} >= {"ens_a", "ens_b", "demo_lightgbm"}
    # Members first: the ensembles' tasks are sent only once their members have results.
    assert deliver(with_ensembles) == 6  # four models, then the two ensembles

    [report] = reports(with_ensembles)
    assert report["status"] == "succeeded", report
    assert line(report, "demo_lightgbm")["status"] == "predicted"
    assert sorted(s.model_name for s in with_ensembles.sandbox.submissions) == SUBMITTED


class Killed(BaseException):
    """The instance stopping mid-call: nothing after this point of the task runs."""


def test_in_queue_mode_an_ensemble_whose_releaser_dies_before_sending_is_sent_by_its_redelivery(
    with_ensembles: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue #21, item 8: the release mark was created, then the instance died before the send.
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    fire_timer()
    send, died = TaskQueue.send, []

    def dies_sending_an_ensemble(
        self: TaskQueue, message: TaskMessage, delay_seconds: float = 0
    ) -> tuple[str, str]:
        if message.model in {"ens_a", "ens_b"} and not died:
            died.append(message.model)
            raise Killed
        return send(self, message, delay_seconds)

    monkeypatch.setattr(TaskQueue, "send", dies_sending_an_ensemble)
    queue = task_queue(with_ensembles)
    while batch := list(queue.receive_messages(max_messages=1, visibility_timeout=60)):
        message = batch[0]
        try:
            function_app.model_task.build().get_user_function()(
                FunctionMessage(
                    id=message.id,
                    body=message.content.encode(),
                    dequeue_count=message.dequeue_count,
                )
            )
        except Killed:  # the host delivers the message again once its visibility timeout passes
            QueueClient.from_connection_string(
                with_ensembles.azurite.connection_string, with_ensembles.task_queue
            ).update_message(message.id, message.pop_receipt, visibility_timeout=0)
            continue
        queue.delete_message(message)

    assert died
    [report] = reports(with_ensembles)
    assert report["status"] == "succeeded", report
    assert sorted(s.model_name for s in with_ensembles.sandbox.submissions) == SUBMITTED


@pytest.mark.parametrize("execution", ["local", "queue"])
def test_a_member_that_failed_in_planning_fails_its_ensemble_in_both_modes(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    execution: str,
) -> None:
    # The member has archived predictions from an earlier test run of the round: a queue task that
    # did not know the member failed in planning built the ensemble from them.
    deploy_with(deployed, small_round, example_models, tmp_path, {}, ENSEMBLES[1:])
    assert post_test_run().status_code == 200
    deployed.sandbox.models.pop(
        "demo_catboost"
    )  # now planning fails it: not a model of the account
    monkeypatch.setenv("MODEL_EXECUTION", execution)
    answer = post_test_run()
    if execution == "queue":
        assert answer.status_code == 202
        deliver(deployed)
    report = reports(deployed)[-1]
    assert line(report, "demo_catboost")["error"].startswith(
        "model 'demo_catboost' is not a Classic model"
    )
    assert line(report, "ens_b")["status"] == "failed"
    assert line(report, "ens_b")["error"] == (
        "ensemble 'ens_b': member 'demo_catboost' failed, so the ensemble was not made"
    )
