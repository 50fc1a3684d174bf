"""Helpers for the tests that run the app against Azurite and the Numerai sandbox."""

from __future__ import annotations

import io
import json
from pathlib import Path

import azure.functions as func
import pandas as pd
import psutil
from azure.functions.queue import QueueMessage as FunctionMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import function_app
from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.data.submission_rules import validate_submission
from shared.limits import WorkerLimits
from shared.manifest import ModelSpec
from shared.storage import Results
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import run_workers

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
    blobs = sorted(
        container.list_blobs(name_starts_with="reports/"), key=lambda b: b.name
    )  # run ids sort by start
    # reports/index.html, the report page, lies beside them.
    return [
        json.loads(container.download_blob(b.name).readall())
        for b in blobs
        if b.name.endswith(".json")
    ]


def line(report: dict, name: str) -> dict:
    """A model's line in a saved report."""
    return next(m for m in report["models"] if m["name"] == name)


def results(stack: LocalStack) -> Results:
    return Results.open(stack.blob_service, stack.results_container)


def uploads(stack: LocalStack) -> list[str]:
    return [entry for entry in stack.sandbox.requests_log if entry.startswith("PUT ")]


def downloads(stack: LocalStack) -> list[str]:
    return [entry for entry in stack.sandbox.requests_log if entry.startswith("GET /files")]


GENEROUS = WorkerLimits(seconds=300, memory_mb=4096)


def predict(
    round_: SyntheticRound,
    models: list[tuple[ModelSpec, Path]],
    work: Path,
    batch_rows: int = 64,
    limits: WorkerLimits = GENEROUS,
    max_parallel: int = 1,
) -> dict[str, ModelOutcome]:
    """Predict `round_` with each (spec, file), each in its worker, as a run does; outcomes by name."""
    requests = work_requests(round_, models, work / "workers", batch_rows)
    return {o.name: o for o in run_workers(requests, limits, max_parallel)}


def work_requests(
    round_: SyntheticRound, models: list[tuple[ModelSpec, Path]], folder: Path, batch_rows: int = 64
) -> list[WorkRequest]:
    """A worker's request for each (spec, file), each with an output folder of its own under `folder`."""
    return [
        WorkRequest(
            spec,
            path,
            round_.live_path,
            round_.features_path,
            round_.benchmark_path,
            "v5.3",
            batch_rows,
            folder / f"{index}-{spec.name}",
        )
        for index, (spec, path) in enumerate(models)
    ]


def assert_numerai_accepts(csv: pd.DataFrame, live_ids: list[str]) -> None:
    """Numerai's submission rules (the app's own copy of them) hold for an uploaded CSV."""
    checker = ModelSpec(name="uploaded", file="uploaded.csv", format="onnx", features="small")
    validate_submission(checker, csv, pd.Index(live_ids))


def submission(outcome: ModelOutcome) -> pd.DataFrame:
    """The predictions a worker wrote, as Numerai would read them."""
    assert outcome.csv is not None, outcome.error
    return pd.read_csv(io.StringIO(outcome.csv))


def task_queue(stack: LocalStack, poison: bool = False) -> QueueClient:
    """The stack's task queue (or its poison queue), decoding messages as the host does."""
    name = f"{stack.task_queue}-poison" if poison else stack.task_queue
    return QueueClient.from_connection_string(
        stack.azurite.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
    )


def deliver(stack: LocalStack, limit: int = 50) -> int:
    """Run every visible task message through the queue function, as one host instance would."""
    queue, done = task_queue(stack), 0
    while done < limit:
        batch = list(queue.receive_messages(max_messages=1, visibility_timeout=60))
        if not batch:
            return done
        message = batch[0]
        function_app.model_task.build().get_user_function()(
            FunctionMessage(
                id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count
            )
        )
        queue.delete_message(message)
        done += 1
    return done


def fork_servers() -> list[psutil.Process]:
    """This process's fork servers still running (`python … -m shared.worker [preload]`)."""
    return [
        child
        for child in psutil.Process().children()
        if child.status() != psutil.STATUS_ZOMBIE and "shared.worker" in child.cmdline()
    ]
