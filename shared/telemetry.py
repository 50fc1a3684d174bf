"""Telemetry: a structured record of every run, and metrics, for Application Insights.

OpenCensus (opencensus-ext-azure, named in the original design) was retired by
Microsoft on 2024-09-30; this uses its successor, the Azure Monitor
OpenTelemetry distro. It is configured only when
APPLICATIONINSIGHTS_CONNECTION_STRING is set (in Azure), with Entra ID
authentication through the app's managed identity, since the Application
Insights resource accepts no instrumentation-key-only ingestion. Locally and
in tests nothing is configured: the same records go to the console through
`logging`, and the metric calls are no-ops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import metrics

from shared.report import ModelReport, ModelStatus, RunReport

log = logging.getLogger(__name__)

METER_NAME = "numerai_submitter"
EXPORTED_LOGGER = "shared"  # only the app's own records, not every library's

_configured = False  # the distro must be set up once per process: a cache, on purpose


def configure_telemetry(environ: Mapping[str, str] | None = None) -> bool:
    """Send the app's logs and metrics to Application Insights, if it is configured.

    Returns whether telemetry is exported. Safe to call on every run.
    """
    global _configured
    env = os.environ if environ is None else environ
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if _configured or not connection_string:
        return _configured
    from azure.identity import ManagedIdentityCredential  # heavy imports, only in Azure
    from azure.monitor.opentelemetry import configure_azure_monitor

    client_id = env.get("AZURE_CLIENT_ID", "").strip() or None
    configure_azure_monitor(
        connection_string=connection_string,
        credential=ManagedIdentityCredential(client_id=client_id),
        logger_name=EXPORTED_LOGGER,
    )
    # The Functions worker relays every record that reaches the root logger to the host,
    # which writes it to Application Insights a second time, without its dimensions: the
    # app's records stop at their own logger, which now exports them once, with them.
    logging.getLogger(EXPORTED_LOGGER).propagate = False
    _configured = True
    log.info("telemetry goes to Application Insights")
    return True


def record_run(report: RunReport, seconds: float) -> None:
    """Emit one structured record per model and one for the run, and the run's metrics."""
    base = {"run_id": report.run_id, "mode": report.mode.value, "round": report.round_number or -1}
    for model in report.models:
        log.info(
            "model %s: %s, %d rows, %.2f s%s",
            model.name,
            model.status.value,
            model.rows,
            model.seconds,
            f": {model.error}" if model.error else "",
            extra={
                **base,
                "model": model.name,
                "model_status": model.status.value,
                "rows": model.rows,
                "seconds": model.seconds,
                "peak_memory_mb": model.peak_memory_mb,
                "error": model.error or "",
                "submission": model.submission.value,
                **_benchmark_figures(model),
            },
        )
    submitted = sum(m.status is ModelStatus.SUBMITTED for m in report.models)
    failed = sum(m.status is ModelStatus.FAILED for m in report.models)
    log.log(
        logging.ERROR if report.failed else logging.INFO,
        "run %s (%s, round %s): %s in %.1f s; %d submitted, %d failed%s",
        report.run_id,
        report.mode.value,
        report.round_number,
        report.status.value,
        seconds,
        submitted,
        failed,
        f"; {report.reason}" if report.reason else "",
        extra={
            **base,
            "run_status": report.status.value,
            "seconds": round(seconds, 3),
            "models_submitted": submitted,
            "models_failed": failed,
            "reason": report.reason or "",
        },
    )
    missed = [m.name for m in report.models if m.status is ModelStatus.MISSED]
    if missed:
        # The record the "a model missed the round" alert looks for (infra/app/alerts.bicep).
        log.error(
            "round %s closed for staking without a submission of %s",
            report.round_number,
            ", ".join(missed),
            extra={**base, "round_missed": "true", "models_missed": ",".join(missed)},
        )
    attributes = {"mode": report.mode.value, "status": report.status.value}
    meter = metrics.get_meter(METER_NAME)
    meter.create_histogram("run.duration", unit="s", description="Duration of a run").record(
        seconds, attributes
    )
    meter.create_counter("models.submitted", description="Submissions confirmed by Numerai").add(
        submitted, attributes
    )
    meter.create_counter("models.failed", description="Models that failed in a run").add(
        failed, attributes
    )
    flush_telemetry()


def flush_telemetry(timeout_millis: int = 10_000) -> None:
    """Export what OpenTelemetry has batched, now.

    The distro exports logs and metrics in batches on a timer, and a run's record is the
    last thing a run or a queue task does: on an instance that Flex Consumption stops soon
    after, a batch still waiting would never reach Application Insights, and the alerts
    that read the record would fire (or stay silent) on a run that happened otherwise.
    Without telemetry configured the API's no-op providers have nothing to flush.
    """
    from opentelemetry import _logs, trace

    for provider in (
        _logs.get_logger_provider(),
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
    ):
        flush = getattr(provider, "force_flush", None)
        if flush is None:
            continue
        try:
            flush(timeout_millis)
        except Exception as exc:  # telemetry must never fail the run it describes
            log.warning("telemetry could not be flushed: %s", exc)


def _benchmark_figures(model: ModelReport) -> dict[str, float]:
    # Telemetry attributes cannot be None: a figure the run could not compute is left out.
    figures = {
        "benchmark_corr": model.benchmark_corr,
        "benchmark_corr_median": model.benchmark_corr_median,
    }
    return {name: value for name, value in figures.items() if value is not None}
