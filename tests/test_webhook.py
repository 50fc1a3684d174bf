"""Starting on Numerai's webhook, end to end: `python -m shared webhooks --set` registers the app's
URL with the Numerai sandbox, one URL per model (the model in its query), the sandbox calls each
model's URL when a round opens, the app's function queues that model's run on the task queue
(Azurite) and answers 200, and the queue function runs it.

The app's URL is function_app's webhook function behind a small HTTP server, which refuses a call
without the function key as the Functions host does (auth_level FUNCTION).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import numerapi
import numerapi.base_api
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionMessage

import function_app
from devkit.local_stack import LocalStack
from shared.cli import main
from shared.errors import RunFailed
from shared.executors.queue.messages import RUN, BadTask, TaskMessage
from shared.run import job
from shared.triggers import tasks
from shared.triggers.webhook import read_call
from tests.support import MODELS, deliver, line, reports, results, task_queue

FUNCTION_KEY = "test-function-key-5e1d"
ROUTE = "/api/numerai-webhook"


class _App(BaseHTTPRequestHandler):
    """POST /api/numerai-webhook?code=<key>, answered by function_app's function as the host would."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        params = {name: values[0] for name, values in parse_qs(url.query).items()}
        if url.path != ROUTE:
            self._answer(404, b"")
            return
        if params.get("code") != FUNCTION_KEY:  # the host checks the key before the function runs
            self._answer(401, b"")
            return
        request = func.HttpRequest(
            "POST",
            f"http://localhost{self.path}",
            headers=dict(self.headers),
            params=params,
            body=body,
        )
        response = function_app.numerai_webhook.build().get_user_function()(request)
        self._answer(response.status_code, response.get_body())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logging.getLogger(__name__).debug(format, *args)


@pytest.fixture
def app_url(deployed: LocalStack) -> Iterator[str]:
    """The webhook's URL, with its key, as a participant registers it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{ROUTE}?code={FUNCTION_KEY}"
    server.shutdown()
    server.server_close()
    thread.join()


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def queued(stack: LocalStack) -> list[TaskMessage]:
    """The messages waiting on the task queue."""
    try:
        waiting = task_queue(stack).peek_messages(max_messages=32)
    except ResourceNotFoundError:  # the first message sent creates the queue
        return []
    return [TaskMessage.from_body(m.content) for m in waiting]


def run_message(message: FunctionMessage) -> None:
    function_app.model_task.build().get_user_function()(message)


def test_the_webhook_takes_posts_with_a_function_key_only() -> None:
    # Not app.get_functions(): the app indexes its functions once, and other tests may have.
    [trigger] = [
        b for b in function_app.numerai_webhook.build().get_bindings() if b.type == "httpTrigger"
    ]
    assert trigger.auth_level == func.AuthLevel.FUNCTION and [
        str(m.value) for m in trigger.methods
    ] == ["POST"]
    assert trigger.route == "numerai-webhook"


@pytest.mark.usefixtures("no_secret_anywhere")
def test_the_cli_sets_and_clears_the_webhook_of_each_model_the_manifest_submits(
    deployed: LocalStack,
    app_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    manifest = json.loads(container.download_blob("models.json").readall())
    for entry in manifest["models"]:
        if entry["name"] == "demo_upload":
            entry["submit"] = False  # predicted for ensembles only: Numerai never starts it
    container.upload_blob("models.json", json.dumps(manifest), overwrite=True)
    ids = deployed.sandbox.models
    submitted = ["demo_catboost", "demo_lightgbm", "demo_onnx"]

    assert main(["webhooks", "--set", app_url]) == 0
    # One URL per model: the model is named in it, the function key stays in ?code=.
    assert deployed.sandbox.webhooks == {ids[name]: f"{app_url}&model={name}" for name in submitted}
    assert "model 'demo_onnx': webhook set to http://127.0.0.1:" in caplog.text
    assert FUNCTION_KEY not in caplog.text  # the key is the URL's query, never logged

    onnx = ids.pop("demo_onnx")  # no longer a model of the account
    assert main(["webhooks", "--clear"]) == 1
    assert deployed.sandbox.webhooks == {onnx: f"{app_url}&model=demo_onnx"}
    assert (
        "model 'demo_onnx' is not a Classic model of this Numerai account, so its webhook was not cleared"
        in caplog.text
    )
    assert "model 'demo_catboost': webhook cleared" in caplog.text


def test_the_cli_refuses_a_url_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["webhooks", "--set", "my-app.azurewebsites.net/api/numerai-webhook"])
    assert stopped.value.code == 2 and "must be a URL such as https://" in capsys.readouterr().err


@pytest.mark.usefixtures("no_secret_anywhere")
@pytest.mark.parametrize("execution", ["local", "queue"])
def test_a_round_opens_numerai_calls_each_models_webhook_and_each_is_submitted_with_its_own_trigger_id(
    deployed: LocalStack,
    app_url: str,
    execution: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_EXECUTION", execution)
    assert main(["webhooks", "--set", app_url]) == 0

    opened = deployed.sandbox.open_new_round()
    calls = deployed.sandbox.wait_for_webhooks()  # one call per model, each with its own trigger id
    names = {model_id: name for name, model_id in deployed.sandbox.models.items()}
    trigger_of = {names[c.model_id]: c.trigger_id for c in calls}
    assert sorted(trigger_of) == sorted(MODELS) and len(set(trigger_of.values())) == len(MODELS)
    assert {(c.status, c.round) for c in calls} == {
        (200, opened.number)
    }  # Numerai counts only a 200
    assert deployed.sandbox.submissions == []  # the answers came before any run
    assert sorted((m.kind, m.model, m.round_number) for m in queued(deployed)) == sorted(
        (RUN, name, opened.number) for name in trigger_of
    )

    deliver(deployed)

    submissions = deployed.sandbox.submissions
    assert Counter(s.model_name for s in submissions) == Counter(MODELS)  # each once
    assert {(s.model_name, s.round, s.trigger_id) for s in submissions} == {
        (name, opened.number, trigger) for name, trigger in trigger_of.items()
    }
    runs = reports(deployed)
    assert len(runs) == len(MODELS)  # a run per call, each of its one model
    for report in runs:
        [model] = [m["name"] for m in report["models"]]
        assert report["status"] == "succeeded" and report["mode"] == "scheduled", report
        assert report["trigger_id"] == trigger_of[model] and report["execution"] == execution
        assert line(report, model)["status"] == "submitted"


def test_two_calls_for_the_same_model_and_round_submit_it_once(
    deployed: LocalStack, app_url: str
) -> None:
    answers: list[tuple[int, dict]] = []
    model_url = f"{app_url}&model=demo_onnx"
    callers = [
        threading.Thread(
            target=lambda n=n: answers.append(
                post(
                    model_url,
                    json.dumps(
                        {"triggerId": f"trigger-{n}", "roundNumber": deployed.sandbox.round.number}
                    ).encode(),
                )
            )
        )
        for n in range(2)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert sorted(status for status, _ in answers) == [200, 200]
    # The first recorded queues the model's run; the other is answered with the reason, and queues nothing.
    [first] = [answer for _, answer in answers if answer["queued"] == RUN]
    [other] = [answer for _, answer in answers if answer["queued"] is None]
    assert "already queued its run" in other["reason"]
    assert [m.run_id for m in queued(deployed)] == [first["delivery"]]

    deliver(deployed)
    [submission] = deployed.sandbox.submissions
    assert (submission.model_name, submission.trigger_id) == ("demo_onnx", first["trigger_id"])
    [report] = reports(deployed)
    assert report["status"] == "succeeded" and report["trigger_id"] == first["trigger_id"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"round 1234 is open", "the request body is not JSON"),
        (b'["trigger-1"]', "the request body must be a JSON object"),
        (b'{"triggerId": ["a", "b"]}', "'triggerId' must be an id"),
        (b'{"triggerId": "a b; DROP"}', "'triggerId' must be an id"),
        (b'{"triggerId": "t-1", "isTest": "yes"}', "'isTest' must be true or false"),
    ],
)
def test_a_body_that_is_not_numerais_is_refused_and_nothing_is_queued(
    deployed: LocalStack,
    app_url: str,
    body: bytes,
    error: str,
) -> None:
    status, answer = post(app_url, body)
    assert status == 400 and error in answer["error"]
    assert queued(deployed) == []


@pytest.mark.parametrize(
    ("body", "trigger_id"),
    [
        (b"", None),
        (b"{}", None),
        (b'{"roundNumber": 1200}', None),
        (b'{"trigger_id": 42}', "42"),
        (
            b'{"triggerId": "t-1", "roundNumber": "soon"}',
            "t-1",
        ),  # the round is only logged: never worth a refusal
    ],
)
def test_a_call_without_a_trigger_id_still_queues_the_run(
    deployed: LocalStack,
    app_url: str,
    body: bytes,
    trigger_id: str | None,
) -> None:
    status, answer = post(app_url, body)
    assert status == 200 and answer["trigger_id"] == trigger_id
    [message] = queued(deployed)
    assert (message.kind, message.run_id) == (RUN, answer["delivery"])
    recorded = results(deployed).runs.webhook_call(message.round_number, None)
    assert recorded is not None and json.loads(recorded)["trigger_id"] == trigger_id


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("&model=Not-A-Name", "the URL's 'model' must be a model name of the manifest"),
        ("&model=" + "a" * 65, "the URL's 'model' must be a model name of the manifest"),
    ],
)
def test_a_url_naming_no_model_of_ours_is_refused(
    deployed: LocalStack,
    app_url: str,
    query: str,
    error: str,
) -> None:
    status, answer = post(f"{app_url}{query}", b'{"triggerId": "t-1"}')
    assert status == 400 and error in answer["error"] and queued(deployed) == []


def test_a_url_without_a_model_from_an_older_version_still_runs_every_model(
    deployed: LocalStack,
    app_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = b'{"triggerId": "t-old", "roundNumber": 1200, "dataVersion": 5, "isTest": false}'
    status, answer = post(app_url, body)
    assert status == 200 and answer["model"] is None
    assert "names no model" in caplog.text and "webhooks --set" in caplog.text
    deliver(deployed)
    assert Counter(s.model_name for s in deployed.sandbox.submissions) == Counter(MODELS)
    assert {s.trigger_id for s in deployed.sandbox.submissions} == {"t-old"}
    [report] = reports(deployed)
    assert report["notes"] == [tasks.OLD_URL_NOTE]


def test_a_call_of_a_model_whose_entry_is_gone_fails_its_run_naming_it(
    deployed: LocalStack,
    app_url: str,
) -> None:
    assert post(f"{app_url}&model=no_such_model", b'{"triggerId": "t-1"}')[0] == 200
    with pytest.raises(RunFailed):
        deliver(deployed)
    [report] = reports(deployed)
    assert (
        report["status"] == "failed"
        and "'no_such_model' are not in the manifest" in report["reason"]
    )
    assert deployed.sandbox.submissions == []


@pytest.mark.usefixtures("no_secret_anywhere")
def test_numerai_clis_node_test_finds_the_models_submission_with_its_trigger_id(
    deployed: LocalStack,
    app_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["webhooks", "--set", app_url]) == 0
    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", deployed.sandbox.url)
    napi = numerapi.NumerAPI(*deployed.sandbox.credentials)
    model_id = deployed.sandbox.models["demo_lightgbm"]
    # numerai-cli's `node test`, its calls word for word (numerai/cli/node/test.py).
    trigger_id = napi.raw_query(
        """mutation ( $modelId: String! ) {
                    triggerModelWebhook( modelId: $modelId )
                }""",
        variables={"modelId": model_id},
        authorization=True,
    )["data"]["triggerModelWebhook"]
    [call] = deployed.sandbox.wait_for_webhooks()
    assert call.succeeded
    deliver(deployed)
    listed = napi.raw_query(
        """query ( $modelId: String! ) {
            submissions( modelId: $modelId ){
                round{ number, tournament },
                triggerId
                insertedAt
            }
        }""",
        variables={"modelId": model_id},
        authorization=True,
    )["data"]["submissions"]
    latest = [s for s in listed if s["round"]["number"] == napi.get_current_round()]
    assert [s["triggerId"] for s in latest] == [trigger_id]
    assert [s.model_name for s in deployed.sandbox.submissions] == ["demo_lightgbm"]


def test_a_call_without_the_key_is_refused(deployed: LocalStack, app_url: str) -> None:
    status, _ = post(app_url.replace(FUNCTION_KEY, "wrong"), b"{}")
    assert status == 401 and queued(deployed) == []


def test_a_failed_webhook_run_fails_its_invocation_once_and_is_not_run_again(
    deployed: LocalStack,
    app_url: str,
) -> None:
    assert post(app_url, b'{"triggerId": "t-1"}')[0] == 200
    [message] = task_queue(deployed).receive_messages(max_messages=1)
    deployed.sandbox.faults.api_5xx_forever = True
    first = FunctionMessage(id=message.id, body=message.content.encode(), dequeue_count=1)
    with pytest.raises(RunFailed, match="Numerai API did not answer rounds"):
        run_message(first)  # the invocation fails: the alert fires
    [report] = reports(deployed)
    assert report["status"] == "failed" and report["trigger_id"] == "t-1"

    deployed.sandbox.faults.reset()
    # The host delivers a failed message again: that delivery runs nothing, and succeeds.
    run_message(FunctionMessage(id=message.id, body=message.content.encode(), dequeue_count=2))
    assert len(reports(deployed)) == 1 and deployed.sandbox.submissions == []


def test_numerapis_own_set_submission_webhook_works_against_the_sandbox_and_needs_the_keys(
    stack: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", stack.sandbox.url)
    stack.sandbox.models["my_model"] = model_id = "9d3c1b6e-0000-4000-8000-000000000001"
    assert numerapi.NumerAPI(*stack.sandbox.credentials).set_submission_webhook(
        model_id, "https://a/b?code=k"
    )
    assert stack.sandbox.webhooks == {model_id: "https://a/b?code=k"}
    with pytest.raises(ValueError, match="Your session is invalid or has expired"):
        numerapi.NumerAPI("someone", "else").set_submission_webhook(model_id, None)
    assert numerapi.NumerAPI(*stack.sandbox.credentials).set_submission_webhook(model_id, None)
    assert stack.sandbox.webhooks == {}


def test_a_run_message_may_name_its_model_and_a_model_message_must() -> None:
    with pytest.raises(BadTask, match="not a task message"):
        TaskMessage.from_body(b'{"kind": "model", "run_id": "r-1", "round_number": 0}')
    message = TaskMessage.from_body(b'{"kind": "run", "run_id": "webhook-1", "round_number": 0}')
    assert (message.kind, message.model) == (RUN, None)
    named = TaskMessage.from_body(
        b'{"kind": "run", "run_id": "webhook-2", "round_number": 0, "model": "m"}'
    )
    assert (named.kind, named.model) == (RUN, "m")


def test_calls_at_once_before_the_queue_exists_are_all_queued(
    deployed: LocalStack, app_url: str
) -> None:
    # Seen once: two first calls both found no queue, both made it, and the second's "already exists" lost its run.
    start = threading.Barrier(8)
    answers: list[int] = []

    def call(n: int) -> None:
        start.wait(10)
        url = f"{app_url}&model=model_{n}"  # one call per model: each queues a run
        answers.append(post(url, json.dumps({"triggerId": f"t-{n}"}).encode())[0])

    callers = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert answers == [200] * 8
    assert sorted(m.model or "" for m in queued(deployed)) == [f"model_{n}" for n in range(8)]


def test_a_models_call_that_finds_the_run_lock_held_runs_again_later(
    deployed: LocalStack,
    app_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Numerai calls every model's webhook at once; in local mode one model's run holds the lock while it
    # predicts, and another model's call must not be lost to it.
    monkeypatch.setattr(job, "LOCK_WAIT_SECONDS", 1)
    monkeypatch.setattr(tasks, "LOCK_RETRY_SECONDS", 0)
    assert post(f"{app_url}&model=demo_onnx", b'{"triggerId": "t-wait"}')[0] == 200
    release = threading.Event()
    holding = threading.Event()

    def hold_the_lock() -> None:
        lock = deployed.blob_service.get_blob_client(
            deployed.results_container, "locks/scheduled-run"
        )
        lock.upload_blob(b"", overwrite=True)
        lease = lock.acquire_lease(lease_duration=15)
        holding.set()
        release.wait(30)
        lease.release()

    holder = threading.Thread(target=hold_the_lock)  # the call's record made the results container
    holder.start()
    try:
        assert holding.wait(30)
        assert deliver(deployed, limit=1) == 1
    finally:
        release.set()
        holder.join(30)
    assert reports(deployed)[-1]["status"] == "locked" and deployed.sandbox.submissions == []
    [again] = queued(deployed)
    assert (again.kind, again.model, again.waits) == (RUN, "demo_onnx", 1)

    deliver(deployed)
    [submission] = deployed.sandbox.submissions
    assert (submission.model_name, submission.trigger_id) == ("demo_onnx", "t-wait")


def test_an_ensembles_call_submits_the_ensemble_alone_and_predicts_its_members(
    deployed: LocalStack,
    app_url: str,
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    manifest = json.loads(container.download_blob("models.json").readall())
    manifest["models"].append(
        {"name": "mixed", "members": {"demo_lightgbm": 1, "demo_catboost": 1}}
    )
    container.upload_blob("models.json", json.dumps(manifest), overwrite=True)
    deployed.sandbox.models["mixed"] = "00000000-0000-4000-8000-0000000000e1"

    assert post(f"{app_url}&model=mixed", b'{"triggerId": "t-mixed"}')[0] == 200
    deliver(deployed)
    # The members have webhook calls, and trigger ids, of their own: they are not submitted with this one.
    assert [(s.model_name, s.trigger_id) for s in deployed.sandbox.submissions] == [
        ("mixed", "t-mixed")
    ]
    [report] = reports(deployed)
    assert report["status"] == "succeeded", report
    assert {m["name"]: m["status"] for m in report["models"]} == {
        "demo_lightgbm": "predicted",
        "demo_catboost": "predicted",
        "mixed": "submitted",
    }


@pytest.mark.parametrize("digits", ["²", "١٢", "1²"])
def test_a_round_number_of_unicode_digits_is_ignored_not_a_500(digits: str) -> None:
    # str.isdigit() accepts these and int() refuses them.
    body = json.dumps({"triggerId": "t-1", "roundNumber": digits}).encode()
    assert read_call(body, {}).round_number == 0


def test_numerais_error_quoting_the_url_never_shows_the_function_key(
    deployed: LocalStack,
    app_url: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    def quote_the_url(entry: str) -> None:  # Numerai refuses the URL, naming it whole
        if "setSubmissionWebhook" in entry:
            deployed.sandbox.faults.graphql_error = f"could not reach {app_url}&model=x (timeout)"

    deployed.sandbox.on_request = quote_the_url
    assert main(["webhooks", "--set", app_url]) == 1
    shown = caplog.text + "".join(capfd.readouterr())
    assert "could not reach http://127.0.0.1:" in shown and "(timeout)" in shown
    assert FUNCTION_KEY not in shown


def test_a_forged_run_message_is_dropped_and_its_trigger_id_never_reaches_numerai(
    deployed: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    # A message on the queue that no webhook call made: its trigger id would go to create_submission.
    forged = {
        "kind": RUN,
        "run_id": "webhook-0123456789ab",
        "round_number": deployed.sandbox.round.number,
        "model": "demo_onnx",
        "trigger_id": "forged-1",
    }
    run_message(FunctionMessage(id="f", body=json.dumps(forged).encode(), dequeue_count=1))
    forged.pop("trigger_id")  # nor without one: no call of Numerai's recorded this delivery
    run_message(FunctionMessage(id="g", body=json.dumps(forged).encode(), dequeue_count=1))
    assert caplog.text.count("dropped") == 2
    assert deployed.sandbox.submissions == [] and reports(deployed) == []


@pytest.mark.parametrize("offset", [-1, 1])
def test_a_call_for_a_round_that_is_not_open_is_answered_200_and_queues_nothing(
    deployed: LocalStack, app_url: str, offset: int
) -> None:
    other = deployed.sandbox.round.number + offset
    body = json.dumps({"triggerId": "t-old", "roundNumber": other}).encode()
    status, answer = post(f"{app_url}&model=demo_onnx", body)
    assert status == 200  # anything else, and Numerai calls again
    assert answer["queued"] is None and f"round {other}" in answer["reason"]
    assert queued(deployed) == []


def test_a_call_queued_before_the_next_round_opened_does_not_submit_that_round_with_its_trigger_id(
    deployed: LocalStack, app_url: str
) -> None:
    body = json.dumps({"triggerId": "t-1", "roundNumber": deployed.sandbox.round.number})
    assert post(f"{app_url}&model=demo_onnx", body.encode())[0] == 200
    opened = deployed.sandbox.open_new_round()
    deliver(deployed)
    assert deployed.sandbox.submissions == []
    [report] = reports(deployed)
    assert report["status"] == "nothing_to_do" and f"round {opened.number}" in report["reason"]


def test_many_calls_in_a_round_fan_out_once(
    deployed: LocalStack, app_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_EXECUTION", "queue")
    round_number = deployed.sandbox.round.number
    answers = [
        post(app_url, json.dumps({"triggerId": f"t-{n}", "roundNumber": round_number}).encode())
        for n in range(20)
    ]
    assert [status for status, _ in answers] == [200] * 20
    assert sum(answer["queued"] == RUN for _, answer in answers) == 1
    assert len(queued(deployed)) == 1
    assert deliver(deployed) == 1 + len(MODELS)  # the run, then one task per model
    assert Counter(s.model_name for s in deployed.sandbox.submissions) == Counter(MODELS)
    assert {s.trigger_id for s in deployed.sandbox.submissions} == {"t-0"}
