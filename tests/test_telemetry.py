"""Each run's records and metrics, captured with OpenTelemetry's in-memory exporters."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import metrics
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devkit.local_stack import LocalStack
from shared.errors import RunFailed
from shared.telemetry import EXPORTED_LOGGER, METER_NAME, configure_telemetry
from tests.support import fire_timer

REPO = Path(__file__).resolve().parent.parent
_READER = InMemoryMetricReader()
# The global meter provider can be set once per process; this module owns it.
metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def exported_logs() -> Iterator[InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger = logging.getLogger(EXPORTED_LOGGER)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield exporter
    logger.removeHandler(handler)
    logger.setLevel(previous)


def fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in an interpreter of its own, for what a process can configure only once."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def metric_points() -> dict[str, list]:
    data = _READER.get_metrics_data()
    points: dict[str, list] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            if scope.scope.name == METER_NAME:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_a_run_emits_a_record_per_model_a_run_record_and_metrics(
    deployed: LocalStack, exported_logs: InMemoryLogRecordExporter
) -> None:
    container = deployed.blob_service.get_container_client(deployed.models_container)
    container.upload_blob("demo_onnx.onnx", b"not onnx", overwrite=True)
    before = {
        name: sum(p.value for p in pts)
        for name, pts in metric_points().items()
        if name != "run.duration"
    }
    with pytest.raises(RunFailed):
        fire_timer()

    records = [
        r.log_record if hasattr(r, "log_record") else r for r in exported_logs.get_finished_logs()
    ]
    per_model = {r.attributes["model"]: r.attributes for r in records if "model" in r.attributes}
    assert sorted(per_model) == ["demo_catboost", "demo_lightgbm", "demo_onnx", "demo_upload"]
    assert per_model["demo_onnx"]["model_status"] == "failed"
    assert "cannot load 'demo_onnx.onnx' as onnx" in per_model["demo_onnx"]["error"]
    assert per_model["demo_catboost"]["model_status"] == "submitted"
    assert per_model["demo_catboost"]["rows"] == 503 and per_model["demo_catboost"]["seconds"] > 0
    assert per_model["demo_catboost"]["peak_memory_mb"] > 0  # its worker's, for sizing the instance
    assert per_model["demo_catboost"]["submission"] == "exists"
    assert per_model["demo_onnx"]["submission"] == "none"
    assert all(a["round"] == 1200 and a["mode"] == "scheduled" for a in per_model.values())
    [run] = [r.attributes for r in records if "run_status" in r.attributes]
    assert (
        run["run_status"] == "failed" and run["models_submitted"] == 3 and run["models_failed"] == 1
    )
    assert run["seconds"] > 0

    points = metric_points()
    after = {
        name: sum(p.value for p in pts) for name, pts in points.items() if name != "run.duration"
    }
    assert after["models.submitted"] - before.get("models.submitted", 0) == 3
    assert after["models.failed"] - before.get("models.failed", 0) == 1
    assert sum(p.count for p in points["run.duration"]) >= 1


def test_the_records_read_well_on_the_console(
    deployed: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    fire_timer()
    assert "model demo_catboost: submitted, 503 rows" in caplog.text
    assert "(scheduled, round 1200): succeeded in" in caplog.text
    assert "4 submitted, 0 failed" in caplog.text


def test_nothing_is_configured_without_a_connection_string() -> None:
    assert configure_telemetry({}) is False
    code = "import sys, shared.run.job; print('azure.monitor.opentelemetry' in sys.modules)"
    completed = fresh_python(code)
    assert completed.stdout.strip() == "False", completed.stderr


# A fresh interpreter: the global logger provider can be set once per process.
FLUSH_CHECK = """
import logging
from opentelemetry import _logs
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from shared.report import Mode, RunReport, RunStatus
from shared.telemetry import EXPORTED_LOGGER, record_run

exporter = InMemoryLogRecordExporter()
provider = LoggerProvider()
# As the distro does: a batch exported on a timer, here one that would not fire for an hour.
provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=3_600_000))
_logs.set_logger_provider(provider)
logger = logging.getLogger(EXPORTED_LOGGER)
logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
logger.setLevel(logging.INFO)
report = RunReport(run_id="r1", mode=Mode.SCHEDULED, started_at="2026-12-05T12:00:00+00:00",
                   status=RunStatus.SUCCEEDED, round_number=1200)
record_run(report, 1.5)
print(sum("run_status" in (r.log_record if hasattr(r, "log_record") else r).attributes
          for r in exporter.get_finished_logs()))
"""


def test_the_run_record_is_exported_before_record_run_returns() -> None:
    """Flex may stop the instance right after a run; a batched record would never leave it."""
    completed = fresh_python(FLUSH_CHECK)
    assert completed.stdout.strip() == "1", completed.stderr


ONCE_CHECK = """
import logging
from shared.telemetry import configure_telemetry

relayed = []
class Relay(logging.Handler):  # stands in for the Functions worker's handler on the root logger
    def emit(self, record):
        relayed.append(record.name)
logging.getLogger().addHandler(Relay())
environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
           "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
           "IngestionEndpoint=http://127.0.0.1:9/"}
assert configure_telemetry(environ)
exporting = [h for h in logging.getLogger("shared").handlers if "opentelemetry" in type(h).__module__]
logging.getLogger("shared.run.job").warning("a record of the app's")
logging.getLogger("azure.core").warning("a library's record")
print(len(exporting), [n for n in relayed if n.startswith("shared")], "azure.core" in relayed)
"""


def test_in_azure_each_record_of_the_app_reaches_application_insights_once() -> None:
    """Exported by OpenTelemetry with its dimensions, and not relayed by the host as well."""
    completed = fresh_python(ONCE_CHECK)
    assert completed.stdout.strip() == "1 [] True", completed.stderr
