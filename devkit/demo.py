"""`make demo`: the whole Functions job on this machine, offline.

Starts Azurite and the Numerai sandbox on 127.0.0.1, generates a live-sized
round (6,720 rows × 2,748 features) and one trained model per format, puts the
models in Blob Storage, then fires the timer function once and the HTTP test
run once, through the function objects of function_app.py, and prints both
reports. It ends with the report page, as GET /api/report answers it, saved
beside its work (.work/demo/report.html). Everything it starts, it stops.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from devkit.example_models import DEMO_PLAN, MORE_FORMATS_PLAN, write_example_models
from devkit.local_stack import LocalStack
from devkit.synthetic import write_round
from shared.report import RunReport

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work" / "demo"


def main() -> int:
    """Run the demo; exit code 0 when both runs did what they should."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shutil.rmtree(WORK, ignore_errors=True)
    _say("Generating a live-sized round and one trained model per format ...")
    round_ = write_round(WORK / "round", seed=42)
    write_example_models(WORK / "models", round_.feature_sets, DEMO_PLAN + MORE_FORMATS_PLAN)
    with LocalStack() as stack:
        _say(f"Azurite on {stack.azurite.blob_endpoint}, Numerai sandbox on {stack.sandbox.url}")
        stack.deploy(WORK / "models", round_)
        os.environ.update(stack.environ(WORK / "app"))
        import azure.functions as func
        from azure.functions.timer import TimerRequest

        import function_app  # after the settings, as the Functions host does
        from shared.errors import RunFailed

        _say("Firing the timer (scheduled run: predict, validate, archive, upload) ...")
        try:
            function_app.scheduled_submission.build().get_user_function()(
                TimerRequest(past_due=False)
            )
            timer_ok = True
        except RunFailed as exc:
            print(f"The timer invocation failed:\n{exc}")
            timer_ok = False
        _print_latest_report(stack)
        print(
            f"\nThe Numerai sandbox received {len(stack.sandbox.submissions)} submissions: "
            + ", ".join(f"{s.model_name} ({len(s.csv):,} bytes)" for s in stack.sandbox.submissions)
        )

        _say("POST /api/test-run (test mode: everything but the upload) ...")
        request = func.HttpRequest("POST", "/api/test-run", body=b"{}")
        response = function_app.test_run.build().get_user_function()(request)
        print(f"HTTP {response.status_code}")
        print(RunReport.from_json(response.get_body()).summary())
        print(
            f"\nSubmissions after the test run: {len(stack.sandbox.submissions)} (unchanged: test runs never upload)"
        )

        _say("GET /api/report (the report page each run rewrites) ...")
        page = function_app.report.build().get_user_function()(
            func.HttpRequest("GET", "/api/report", body=b"")
        )
        (WORK / "report.html").write_bytes(page.get_body())
        print(
            f"HTTP {page.status_code}; the page is {stack.results_container}/reports/index.html in Blob Storage,\n"
            f"and a copy to open in a browser: {WORK / 'report.html'}"
        )
    return 0 if timer_ok and response.status_code == 200 and page.status_code == 200 else 1


def _print_latest_report(stack: LocalStack) -> None:
    container = stack.blob_service.get_container_client(stack.results_container)
    latest = max(
        b.name
        for b in container.list_blobs(name_starts_with="reports/")
        if b.name.endswith(".json")
    )
    report = RunReport.from_json(container.download_blob(latest).readall())
    print(f"Report saved as {stack.results_container}/{latest}:")
    print(report.summary())


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
