"""function_app.py as the Functions host's own Python worker sees it (Python 3.13 on Flex).

From Python 3.13 the host's worker is Microsoft's `azure-functions-runtime`. Its loader
indexes function_app.py, and the JSON each function's `get_raw_bindings()` gives is what the
host binds triggers to: a wrong route, auth level, queue name or setting expression fails
here instead of after a deployment. Its Registry then loads each function as the worker does
before the first invocation, checking the parameters and their annotations against the
bindings. The HTTP test run is invoked through that loaded function; docs/development.md
says why not through `handle_event`.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import types
from pathlib import Path

import pytest

if sys.version_info < (3, 13):
    pytest.skip(
        "azure-functions-runtime, the host's worker from Python 3.13 on, needs Python 3.13: "
        "run make test PYTHON=python3.13",
        allow_module_level=True,
    )

# Below the skip: azure-functions-runtime installs on Python 3.13 and later only.
import azure.functions as func
from azure_functions_runtime import functions, loader
from azure_functions_runtime.bindings import context, meta, retrycontext, tracecontext
from azure_functions_runtime.utils import executor

from devkit.local_stack import LocalStack

FUNCTION_APP = Path(__file__).resolve().parent.parent / "function_app.py"

# What the host receives for each function, less each binding's "direction" and "name".
HTTP_OUT = {"type": "http"}
EXPECTED = {
    "scheduled_submission": [
        {
            "type": "timerTrigger",
            "schedule": "%NUMERAI_SCHEDULE%",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ],
    "test_run": [
        {"type": "httpTrigger", "methods": ["POST"], "authLevel": "FUNCTION", "route": "test-run"},
        HTTP_OUT,
    ],
    "numerai_webhook": [
        {
            "type": "httpTrigger",
            "methods": ["POST"],
            "authLevel": "FUNCTION",
            "route": "numerai-webhook",
        },
        HTTP_OUT,
    ],
    "model_task": [
        {
            "type": "queueTrigger",
            "queueName": "%TASK_QUEUE%",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "poison_task": [
        {
            "type": "queueTrigger",
            "queueName": "%TASK_QUEUE%-poison",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "runs": [
        {"type": "httpTrigger", "methods": ["GET"], "authLevel": "FUNCTION", "route": "runs"},
        HTTP_OUT,
    ],
    "run": [
        {
            "type": "httpTrigger",
            "methods": ["GET"],
            "authLevel": "FUNCTION",
            "route": "runs/{run_id}",
        },
        HTTP_OUT,
    ],
    "report": [
        {"type": "httpTrigger", "methods": ["GET"], "authLevel": "FUNCTION", "route": "report"},
        HTTP_OUT,
    ],
}

# The worker's Registry reads three values of BindingInfo from the FunctionRpc protobuf
# module that the host-side proxy worker hands it (not on PyPI); these are FunctionRpc.proto's
# BindingInfo.Direction.out and .inout and BindingInfo.DataType.undefined.
HOST_PROTOS = types.SimpleNamespace(BindingInfo=types.SimpleNamespace(out=1, inout=2, undefined=0))


@functools.cache
def indexed() -> list[func.FunctionBuilder]:
    """function_app.py's functions, indexed by the host worker's own loader from a fresh import
    of the module, as in a new worker: a FunctionApp lists its functions only once, and other
    tests may have asked the module this process already imported."""
    imported = sys.modules.pop("function_app", None)
    try:
        return loader.index_function_app(str(FUNCTION_APP))
    finally:
        if imported is not None:
            sys.modules["function_app"] = imported


@functools.cache
def loaded() -> dict[str, functions.FunctionInfo]:
    """Each indexed function as the worker loads it before invoking it."""
    meta.load_binding_registry()
    registry = functions.Registry()
    return {
        info.name: info
        for info in (registry.add_indexed_function(f, HOST_PROTOS) for f in indexed())
    }


def test_the_host_worker_indexes_every_function_with_its_trigger_and_settings() -> None:
    raw = {f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()] for f in indexed()}
    seen = {
        name: [{k: v for k, v in b.items() if k not in ("direction", "name")} for b in bindings]
        for name, bindings in raw.items()
    }
    assert seen == EXPECTED
    for bindings in raw.values():
        trigger, *outputs = bindings
        assert trigger["direction"] == "IN"
        assert all(b["direction"] == "OUT" and b["name"] == "$return" for b in outputs)


def test_the_host_worker_loads_every_function_with_matching_annotations() -> None:
    infos = loaded()
    assert sorted(infos) == sorted(EXPECTED)
    for name, info in infos.items():
        assert not info.is_async and not info.requires_context, name
        [(_, trigger)] = info.input_types.items()
        assert trigger.binding_name == EXPECTED[name][0]["type"], name
        assert info.is_http_func == (trigger.binding_name == "httpTrigger"), name
        returns = info.return_type.pytype if info.return_type else None
        assert returns is (func.HttpResponse if info.is_http_func else None), name


def test_the_http_test_run_through_the_host_workers_loaded_function(deployed: LocalStack) -> None:
    info = loaded()["test_run"]
    request = func.HttpRequest(
        "POST", "/api/test-run", body=json.dumps({"models": ["demo_onnx"]}).encode()
    )
    [argument] = info.input_types
    invocation = context.Context(
        info.name,
        info.directory,
        "test-invocation",
        threading.local(),
        tracecontext.TraceContext("", "", {}),
        retrycontext.RetryContext(0, 0, None),
    )
    # How the worker calls a sync function, less the FunctionRpc messages around it.
    response = executor.run_sync_func("test-invocation", invocation, info.func, {argument: request})
    assert isinstance(response, func.HttpResponse) and response.status_code == 200
    report = json.loads(response.get_body())
    assert report["mode"] == "test" and report["status"] == "succeeded"
    assert [(m["name"], m["status"]) for m in report["models"]] == [("demo_onnx", "validated")]
    assert deployed.sandbox.submissions == []
