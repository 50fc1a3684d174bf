"""Azure Functions entry points: a timer that submits, an HTTP test run that does not, Numerai's
webhook, the queue tasks (queue mode's models, the webhook's runs), the runs API and the report page.

Triggers only; what each calls lives in `shared/triggers/`. The host imports this module at
every cold start just to index the functions, so it imports only azure.functions and
`shared` (which installs log redaction before anything logs). `shared.triggers` and
everything behind it (numerapi, azure-storage-blob, pandas, pydantic,
numerai-tools with scipy, telemetry) load on the first invocation instead:
about 2 s saved at every cold start. tests/test_imports.py holds this.
"""

from typing import TYPE_CHECKING

import azure.functions as func

import shared  # noqa: F401 - installs log redaction

if TYPE_CHECKING:  # for the annotation only: shared.triggers loads at the first invocation
    from shared.triggers.answers import HttpAnswer

app = func.FunctionApp()


@app.timer_trigger(
    schedule="%NUMERAI_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
def scheduled_submission(timer: func.TimerRequest) -> None:
    """Predict and submit every model in the manifest; fails the invocation if any model failed."""
    from shared.triggers import scheduled  # here, not above: see the module docstring

    scheduled.scheduled_run(past_due=timer.past_due)


@app.route(route="test-run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def test_run(req: func.HttpRequest) -> func.HttpResponse:
    """Run every step but the upload and answer with the run report."""
    from shared.triggers import test_run as trigger  # here, not above: see the module docstring

    return _response(trigger.test_run(req.get_body(), dict(req.params)))


@app.route(route="numerai-webhook", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def numerai_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Numerai's call for a model when a round opens: queues its run and answers 200 at once."""
    from shared.triggers import webhook  # here, not above: see the module docstring

    return _response(webhook.numerai_webhook(req.get_body(), dict(req.params)))


# The queues live in the host's storage (AzureWebJobsStorage); "-poison" is the host's own naming.
@app.queue_trigger(arg_name="message", queue_name="%TASK_QUEUE%", connection="AzureWebJobsStorage")
def model_task(message: func.QueueMessage) -> None:
    """One model of a queue-mode run (the task that completes it writes its report), or a webhook's run."""
    from shared.triggers import tasks  # here, not above: see the module docstring

    tasks.model_task(message.get_body(), message.dequeue_count or 1)


@app.queue_trigger(
    arg_name="message", queue_name="%TASK_QUEUE%-poison", connection="AzureWebJobsStorage"
)
def poison_task(message: func.QueueMessage) -> None:
    """Queue mode: a model task the host gave up on; its model is reported failed."""
    from shared.triggers import tasks  # here, not above: see the module docstring

    tasks.poisoned_task(message.get_body(), message.dequeue_count or 1)


@app.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def runs(req: func.HttpRequest) -> func.HttpResponse:
    """The newest runs first (?limit=N)."""
    from shared.triggers import runs_api  # here, not above: see the module docstring

    return _response(runs_api.list_runs(dict(req.params)))


@app.route(route="runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def run(req: func.HttpRequest) -> func.HttpResponse:
    """One run's report, and whether the run is finished."""
    from shared.triggers import runs_api  # here, not above: see the module docstring

    return _response(runs_api.get_run(req.route_params.get("run_id", "")))


@app.route(route="report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def report(req: func.HttpRequest) -> func.HttpResponse:
    """The report page (reports/index.html in the results container) as HTML."""
    from shared.triggers import runs_api  # here, not above: see the module docstring

    return _response(runs_api.report_page())


def _response(answer: "HttpAnswer") -> func.HttpResponse:
    return func.HttpResponse(
        answer.body, status_code=answer.status, headers=answer.headers, mimetype=answer.mimetype
    )
