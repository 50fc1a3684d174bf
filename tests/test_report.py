"""The run report's texts are bounded, and redaction still holds where a text was cut."""

from __future__ import annotations

import json

from shared.redaction import register
from shared.report import MAX_TEXT_CHARS, Mode, ModelReport, ModelStatus, RunReport, RunStatus


def test_a_long_error_is_cut_saying_how_much() -> None:
    line = ModelReport("m")
    line.fail("x" * 5000)
    assert line.error == "x" * MAX_TEXT_CHARS + "… (3000 characters cut)"
    line.fail("short")
    assert line.error == "short"


def test_a_long_run_reason_is_cut_and_so_is_each_unfinished_models_line() -> None:
    report = RunReport(
        "r", Mode.TEST, "now", models=[ModelReport("a"), ModelReport("b", ModelStatus.VALIDATED)]
    )
    report.fail("y" * 5000)
    assert report.reason == "y" * MAX_TEXT_CHARS + "… (3000 characters cut)"
    assert (
        report.model("a").error
        == "not finished: " + "y" * (MAX_TEXT_CHARS - 14) + "… (3014 characters cut)"
    )
    assert report.model("b").error is None


def test_a_secret_split_by_the_cut_is_redacted_too() -> None:
    secret = "S3CRETKEY1234567890"
    register(secret)
    report = RunReport("r", Mode.TEST, "now", models=[ModelReport("a"), ModelReport("b")])
    report.model("b").fail(f"{secret} and again {secret}")
    report.fail("a" * (MAX_TEXT_CHARS - 10) + secret + "b" * 100)  # the cut keeps "S3CRETKEY1"
    report.redact()
    assert "S3CRETKEY1" not in report.reason and report.reason.endswith("… (109 characters cut)")
    assert "S3CRETKEY" not in report.model("a").error
    assert "S3CRETKEY" not in report.model("b").error and " and again " in report.model("b").error


def test_a_report_of_a_newer_version_is_read_with_its_unknown_fields_and_statuses_as_they_are() -> (
    None
):
    newer = json.loads(
        RunReport("20261128T120000123456Z-scheduled-1a2b3c4d", Mode.SCHEDULED, "t").to_json()
    )
    newer.update(status="paused", mode="canary", execution="batch", cost_eur=0.12)
    newer["models"] = [
        {
            **json.loads(ModelReport("m").to_json()),
            "status": "queued",
            "submission": "pending",
            "gpu": "a100",
        }
    ]
    report = RunReport.from_json(json.dumps(newer))
    assert (report.status.value, report.mode.value, report.execution.value) == (
        "paused",
        "canary",
        "batch",
    )
    assert report.status is not RunStatus.RUNNING and not report.failed
    assert json.loads(report.to_json()) == newer
