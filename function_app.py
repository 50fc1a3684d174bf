"""Azure Functions entry points: a timer that submits, and an HTTP test run that does not.

Triggers only; the job lives in `shared/`. The host imports this module at every
cold start just to index the functions, so it imports only azure.functions and
`shared` (which installs log redaction before anything logs). `shared.jobs` and
everything behind it (numerapi, azure-storage-blob, pandas, pydantic,
numerai-tools with scipy, telemetry) load on the first invocation instead:
about 2 s saved at every cold start. tests/test_imports.py holds this.
"""

import azure.functions as func

import shared  # noqa: F401 - installs log redaction

app = func.FunctionApp()

@app.timer_trigger(schedule="%NUMERAI_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def scheduled_submission(timer: func.TimerRequest) -> None:
    """Predict and submit every model in the manifest; fails the invocation if any model failed."""
    from shared import jobs  # here, not above: see the module docstring

    jobs.scheduled_run(past_due=timer.past_due)

@app.route(route="test-run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def test_run(req: func.HttpRequest) -> func.HttpResponse:
    """Run every step but the upload and answer with the run report."""
    from shared import jobs  # here, not above: see the module docstring

    status, body = jobs.test_run(req.get_body(), dict(req.params))
    return func.HttpResponse(body, status_code=status, mimetype="application/json")

@app.route(route="report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def report(req: func.HttpRequest) -> func.HttpResponse:
    """The report page (reports/index.html in the results container) as HTML."""
    from shared import report_page  # here, not above: see the module docstring

    status, content_type, body = report_page.page_response()
    return func.HttpResponse(body, status_code=status, mimetype=content_type, charset="utf-8")
