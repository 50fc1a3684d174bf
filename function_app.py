"""Azure Functions entry points: a timer that submits, and an HTTP test run that does not.

Triggers only; the job lives in `shared/`. Keep imports here light: the host
imports this module at every cold start to index the functions.
"""

import azure.functions as func

from shared import jobs

app = func.FunctionApp()

@app.timer_trigger(schedule="%NUMERAI_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def scheduled_submission(timer: func.TimerRequest) -> None:
    """Predict and submit every model in the manifest; fails the invocation if any model failed."""
    jobs.scheduled_run(past_due=timer.past_due)

@app.route(route="test-run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def test_run(req: func.HttpRequest) -> func.HttpResponse:
    """Run every step but the upload and answer with the run report."""
    status, body = jobs.test_run(req.get_body(), dict(req.params))
    return func.HttpResponse(body, status_code=status, mimetype="application/json")
