"""A tiny FunctionApp with queue-triggered functions, for the queue host's own tests.

The message body (JSON) says how the task behaves; every call is appended to
`$RECORD_DIR/calls.jsonl`, so a test can see who ran what, with which dequeue count.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp()


class Planned(Exception):
    """The failure a message asked for."""


def _record(function: str, message: func.QueueMessage, event: str, **extra: object) -> None:
    line = json.dumps(
        {
            "function": function,
            "event": event,
            "body": message.get_body().decode(),
            "dequeue_count": message.dequeue_count,
            "work_dir": os.environ["WORK_DIR"],
            **extra,
        }
    )
    # One short O_APPEND write per line: lines from several processes do not interleave.
    with open(Path(os.environ["RECORD_DIR"]) / "calls.jsonl", "a") as calls:
        calls.write(line + "\n")


@app.queue_trigger(arg_name="message", queue_name="%TASK_QUEUE%", connection="AzureWebJobsStorage")
def task(message: func.QueueMessage) -> None:
    """Fail while dequeue_count <= fail_times; hang (with a child process) on the first delivery
    when hang_first; wait for the file `gate`; sleep `seconds`."""
    plan = json.loads(message.get_body())
    _record("task", message, "start")
    if message.dequeue_count <= plan.get("fail_times", 0):
        _record("task", message, "fail")
        raise Planned(f"failing delivery {message.dequeue_count} as planned")
    if plan.get("hang_first") and message.dequeue_count == 1:
        child = subprocess.Popen(["sleep", "300"])
        _record("task", message, "hanging", child=child.pid)
        time.sleep(300)
    if "gate" in plan:
        deadline = time.monotonic() + 20
        while not Path(plan["gate"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(plan.get("seconds", 0))
    _record("task", message, "done")


@app.queue_trigger(
    arg_name="message", queue_name="%TASK_QUEUE%-poison", connection="AzureWebJobsStorage"
)
def poison(message: func.QueueMessage) -> None:
    """Record the poisoned message."""
    _record("poison", message, "done")
