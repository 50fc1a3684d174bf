"""Helpers for the tests that run the app against Azurite and the Numerai sandbox."""

from __future__ import annotations

import io
import json
from pathlib import Path

import azure.functions as func
import pandas as pd
from azure.functions.timer import TimerRequest

import function_app
from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.manifest import ModelSpec
from shared.storage import ResultsStore
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import WorkerLimits, run_workers

# The fleet most tests deploy. Keras is left to the tests about formats: each of its
# workers imports TensorFlow (seconds), and these tests are about the job.
TEST_PLAN = [
    ("demo_catboost", "catboost", "all"),
    ("demo_lightgbm", "lightgbm", "medium"),
    ("demo_onnx", "onnx", "small"),
    ("demo_upload", "numerai_pickle", "medium"),
]
MODELS = [name for name, _, _ in TEST_PLAN]


def fire_timer(past_due: bool = False) -> None:
    function_app.scheduled_submission.build().get_user_function()(TimerRequest(past_due=past_due))


def post_test_run(body: bytes = b"", params: dict | None = None) -> func.HttpResponse:
    request = func.HttpRequest("POST", "/api/test-run", body=body, params=params or {})
    return function_app.test_run.build().get_user_function()(request)


def reports(stack: LocalStack) -> list[dict]:
    """Every saved report, oldest first."""
    container = stack.blob_service.get_container_client(stack.results_container)
    blobs = sorted(container.list_blobs(name_starts_with="reports/"), key=lambda b: b.name)  # run ids sort by start
    # reports/index.html, the report page, lies beside them.
    return [json.loads(container.download_blob(b.name).readall()) for b in blobs if b.name.endswith(".json")]


def line(report: dict, name: str) -> dict:
    """A model's line in a saved report."""
    return next(m for m in report["models"] if m["name"] == name)


def results(stack: LocalStack) -> ResultsStore:
    return ResultsStore(stack.blob_service, stack.results_container)


def uploads(stack: LocalStack) -> list[str]:
    return [entry for entry in stack.sandbox.requests_log if entry.startswith("PUT ")]


def downloads(stack: LocalStack) -> list[str]:
    return [entry for entry in stack.sandbox.requests_log if entry.startswith("GET /files")]


GENEROUS = WorkerLimits(seconds=300, memory_mb=4096)


def predict(
    round_: SyntheticRound, models: list[tuple[ModelSpec, Path]], work: Path, batch_rows: int = 64,
    limits: WorkerLimits = GENEROUS, max_parallel: int = 1,
) -> dict[str, ModelOutcome]:
    """Predict `round_` with each (spec, file), each in its worker, as a run does; outcomes by name."""
    requests = [WorkRequest(spec, path, round_.live_path, round_.features_path, round_.benchmark_path, "v5.3",
                            batch_rows, work / "workers" / f"{index}-{spec.name}")
                for index, (spec, path) in enumerate(models)]
    return {o.name: o for o in run_workers(requests, limits, max_parallel)}


def submission(outcome: ModelOutcome) -> pd.DataFrame:
    """The predictions a worker wrote, as Numerai would read them."""
    assert outcome.csv is not None, outcome.error
    return pd.read_csv(io.StringIO(outcome.csv))
