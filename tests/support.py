"""Helpers for the tests that run the app against Azurite and the Numerai sandbox."""

from __future__ import annotations

import json

import azure.functions as func
from azure.functions.timer import TimerRequest

import function_app
from devkit.local_stack import LocalStack
from shared.storage import ResultsStore

MODELS = ["demo_keras", "demo_lightgbm", "demo_onnx", "demo_upload"]


def fire_timer(past_due: bool = False) -> None:
    function_app.scheduled_submission.build().get_user_function()(TimerRequest(past_due=past_due))


def post_test_run(body: bytes = b"", params: dict | None = None) -> func.HttpResponse:
    request = func.HttpRequest("POST", "/api/test-run", body=body, params=params or {})
    return function_app.test_run.build().get_user_function()(request)


def reports(stack: LocalStack) -> list[dict]:
    """Every saved report, oldest first."""
    container = stack.blob_service.get_container_client(stack.results_container)
    blobs = sorted(container.list_blobs(name_starts_with="reports/"), key=lambda b: b.name)  # run ids sort by start
    return [json.loads(container.download_blob(b.name).readall()) for b in blobs]


def results(stack: LocalStack) -> ResultsStore:
    return ResultsStore(stack.blob_service, stack.results_container)


def uploads(stack: LocalStack) -> list[str]:
    return [entry for entry in stack.sandbox.requests_log if entry.startswith("PUT ")]


def downloads(stack: LocalStack) -> list[str]:
    return [entry for entry in stack.sandbox.requests_log if entry.startswith("GET /files")]
