"""Command line, outside the Functions host.

    python -m shared run (--test-mode | --submit) [--models a,b] [--settings local.settings.json]
    python -m shared predict --data DIR --manifest models.json --out DIR
    python -m shared report-page [--settings local.settings.json] [--out report.html]
    python -m shared webhooks (--set URL | --clear) [--settings local.settings.json]

`run` is the Functions job itself, with the same settings, read from the
environment or from a local.settings.json (for containers, cron and debugging);
it uploads to Numerai only with `--submit` (`--test-mode` does every step but
the upload; one of the two is required), and exits 1 when the run failed. `predict` runs the models on local files, each
in a worker process of its own as the job does:
`--data` holds a round as Numerai serves it (`features.json`, `live.parquet`,
optionally `live_benchmark_models.parquet`); model files are found relative to
the manifest. One `<model>.csv` (`id,prediction`) is written per valid model,
`<model>.rejected.csv` for predictions that failed validation (kept for
inspection, never uploaded) and `summary.json` for the whole run. The exit
code is 1 when any model failed. `report-page` rewrites `reports/index.html` in the
results container from its reports (as every run does) and can save a copy.
`webhooks` registers URL (the app's /api/numerai-webhook with its function key), with
`model=<name>` added to its query, as Numerai's submission webhook of each model the
manifest submits, or clears them; it exits 1 when any model's failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.console import configure_console
from shared.errors import AppError, SettingsError
from shared.limits import WorkerLimits, default_memory_limit_mb
from shared.manifest import load_manifest
from shared.settings import DEFAULT_BATCH_ROWS, Settings, load_settings
from shared.worker.pool import shared_pool
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import run_workers, worker_environment

log = logging.getLogger(__name__)


@dataclass
class ModelSummary:
    """One model's line in `summary.json`."""

    name: str
    ok: bool
    rows: int
    load_seconds: float
    predict_seconds: float
    peak_memory_mb: float
    error: str | None
    csv: str | None

    @classmethod
    def from_outcome(cls, outcome: ModelOutcome, csv: Path | None) -> ModelSummary:
        return cls(
            outcome.name,
            outcome.ok,
            outcome.rows,
            round(outcome.load_seconds, 3),
            round(outcome.predict_seconds, 3),
            outcome.peak_memory_mb,
            outcome.error,
            csv.name if csv else None,
        )


@dataclass
class PredictSummary:
    """What `predict` did, written as `summary.json`."""

    data: str
    data_version: str
    rows: int
    batch_rows: int
    seconds: float
    peak_rss_mb: float
    models: list[ModelSummary] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [m.name for m in self.models if not m.ok]


def predict_local(
    data_dir: Path,
    manifest_path: Path,
    out_dir: Path,
    *,
    data_version: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    model_names: list[str] | None = None,
    limits: WorkerLimits | None = None,
    max_parallel: int = 1,
) -> PredictSummary:
    """Predict a round in `data_dir` with every model, and write its CSVs and summary to `out_dir`.

    `limits` defaults to the app's (MODEL_TIME_LIMIT_SECONDS and its memory share).
    """
    started = time.perf_counter()
    # The fork server's imports (about 2 s) run while this process reads the manifest.
    shared_pool().prestart(worker_environment())
    manifest = load_manifest(manifest_path).select(model_names)
    benchmark = data_dir / "live_benchmark_models.parquet"
    workers = out_dir / "workers"
    requests = [
        WorkRequest(
            spec,
            manifest_path.parent / spec.file,
            data_dir / "live.parquet",
            data_dir / "features.json",
            benchmark if benchmark.exists() else None,
            data_version,
            batch_rows,
            workers / spec.name,
        )
        for spec in manifest.models
    ]
    limits = limits or WorkerLimits(
        Settings.model_time_limit_seconds, default_memory_limit_mb(max_parallel)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = run_workers(requests, limits, max_parallel)
    finally:
        shutil.rmtree(workers, ignore_errors=True)
    summary = PredictSummary(
        data=str(data_dir),
        data_version=data_version,
        rows=max((o.rows for o in outcomes), default=0),
        batch_rows=batch_rows,
        seconds=0.0,
        peak_rss_mb=0.0,
        models=[ModelSummary.from_outcome(o, _write_csv(o, out_dir)) for o in outcomes],
    )
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.peak_rss_mb = peak_rss_mb()
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    From VmHWM where Linux has it: getrusage's figure survives exec, so a child
    of a large process would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_csv(outcome: ModelOutcome, out_dir: Path) -> Path | None:
    if outcome.csv is None:
        return None
    path = out_dir / (f"{outcome.name}.csv" if outcome.ok else f"{outcome.name}.rejected.csv")
    path.write_text(outcome.csv)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m shared`."""
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    # Every command takes -v: by default a line per model and a summary.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: every step; -vv: everything, the Azure SDK's requests included",
    )
    predict = commands.add_parser(
        "predict", parents=[common], help="predict a round from local files"
    )
    predict.add_argument(
        "--data", type=Path, required=True, help="folder with features.json and live.parquet"
    )
    predict.add_argument("--manifest", type=Path, required=True, help="the models.json to run")
    predict.add_argument(
        "--out", type=Path, required=True, help="folder for the CSVs and summary.json"
    )
    predict.add_argument("--data-version", default="v5.3", help="named in errors (default v5.3)")
    predict.add_argument("--batch-rows", type=_positive_int, default=DEFAULT_BATCH_ROWS)
    predict.add_argument(
        "--models", type=_names, default=None, help="comma-separated subset of models"
    )
    predict.add_argument(
        "--parallel", type=_positive_int, default=1, help="models predicted at once (default 1)"
    )
    run = commands.add_parser(
        "run",
        parents=[common],
        help="the Functions job, outside the Functions host: --test-mode, or --submit to upload",
        description="The Functions job, outside the Functions host. It uploads to Numerai only "
        "with --submit; --test-mode does every step but the upload.",
    )
    # An upload to Numerai is the one step that cannot be taken back: it is never the default.
    intent = run.add_mutually_exclusive_group(required=True)
    intent.add_argument("--test-mode", action="store_true", help="every step but the upload")
    intent.add_argument(
        "--submit",
        action="store_true",
        help="upload the predictions to Numerai, as the timer does",
    )
    run.add_argument("--models", type=_names, default=None, help="comma-separated subset of models")
    run.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="a local.settings.json whose Values are used where the environment has none",
    )
    page = commands.add_parser(
        "report-page", parents=[common], help="rewrite reports/index.html in the results container"
    )
    page.add_argument(
        "--settings", type=Path, default=None, help="a local.settings.json, as for `run`"
    )
    page.add_argument("--out", type=Path, default=None, help="also save the page to this file")
    hooks = commands.add_parser(
        "webhooks",
        parents=[common],
        help="register (or clear) Numerai's webhook for the manifest's models",
    )
    change = hooks.add_mutually_exclusive_group(required=True)
    change.add_argument(
        "--set",
        type=_webhook_url,
        metavar="URL",
        dest="url",
        help="https://<app>.azurewebsites.net/api/numerai-webhook?code=<function key>",
    )
    change.add_argument("--clear", action="store_true", help="remove the webhook")
    hooks.add_argument(
        "--settings", type=Path, default=None, help="a local.settings.json, as for `run`"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    configure_console(args.verbose)
    if args.command == "run":
        return _run(args)
    if args.command == "report-page":
        return _report_page(args)
    if args.command == "webhooks":
        return _webhooks(args)
    try:
        summary = predict_local(
            args.data,
            args.manifest,
            args.out,
            data_version=args.data_version,
            batch_rows=args.batch_rows,
            model_names=args.models,
            max_parallel=args.parallel,
        )
    except AppError as exc:
        log.error("%s", exc)
        return 2
    for model in summary.models:
        log.info(
            "%-24s %s %6d rows %7.2f s %6.0f MiB  %s",
            model.name,
            "ok    " if model.ok else "FAILED",
            model.rows,
            model.load_seconds + model.predict_seconds,
            model.peak_memory_mb,
            model.error or model.csv,
        )
    log.info(
        "%d rows in %.1f s; summary in %s", summary.rows, summary.seconds, args.out / "summary.json"
    )
    return 1 if summary.failed else 0


def _run(args: argparse.Namespace) -> int:
    # The job's modules (numerapi, pandas, Blob Storage: about 1.7 s) only for the commands that
    # need them: `predict` starts its fork server sooner without them.
    from shared.report import Mode
    from shared.run.job import run_job
    from shared.triggers.executors import executor_for

    try:
        environ = _environ(args.settings)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    mode = Mode.TEST if args.test_mode else Mode.SCHEDULED
    report = run_job(mode, executor_for, args.models, environ=environ)
    log.info("%s", report.summary())
    return 1 if report.failed else 0


def _environ(settings: Path | None) -> dict[str, str]:
    """The process's environment, with a local.settings.json's Values where it has none."""
    environ = dict(os.environ)
    if settings is None:
        return environ
    try:
        values = json.loads(settings.read_text())["Values"]
    except (OSError, ValueError, KeyError) as exc:
        raise SettingsError(f"{settings}: not a local.settings.json with Values ({exc})") from None
    # The environment wins, as it does for the Functions host.
    return {**{k: str(v) for k, v in values.items()}, **environ}


def _report_page(args: argparse.Namespace) -> int:
    from shared.report_page import settings_results, write_report_page

    try:
        results = settings_results(_environ(args.settings))
        name = write_report_page(results)
        page = results.page.read() or ""
        if args.out is not None:
            args.out.write_text(page, encoding="utf-8")
    except (AppError, OSError) as exc:
        log.error("the report page was not written: %s", exc)
        return 2
    log.info(
        "report page written: %s in the results container%s",
        name,
        f", and {args.out}" if args.out is not None else "",
    )
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    from shared.webhook_registration import set_webhooks

    try:
        changes = set_webhooks(
            load_settings(_environ(args.settings)), None if args.clear else args.url
        )
    except AppError as exc:
        log.error("no webhook was changed: %s", exc)
        return 2
    for change in changes:
        if change.error:
            log.error("%s", change.error)
        else:
            log.info("%s", change.done)
    if not changes:
        log.warning("the manifest submits no model; no webhook was changed")
    return 1 if any(change.error for change in changes) else 0


def _webhook_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            "must be a URL such as "
            "https://<app>.azurewebsites.net/api/numerai-webhook?code=<function key>"
        )
    if "code" not in parse_qs(parts.query):
        # Said, not refused: a proxy in front of the app may take the key another way.
        log.warning("the URL has no ?code=<function key>: Azure answers Numerai's call with 401")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


if __name__ == "__main__":
    sys.exit(main())
