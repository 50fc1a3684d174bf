"""Command line, outside the Functions host: parses the arguments and dispatches.

    python -m shared run (--test-mode | --submit) [--models a,b] [--settings local.settings.json]
    python -m shared predict (--data DIR | --round-from-numerai) --manifest models.json --out DIR
    python -m shared models (add FILE | list | remove NAME | check) [--settings local.settings.json]
    python -m shared doctor [--settings local.settings.json]
    python -m shared report-page [--settings local.settings.json] [--out report.html]
    python -m shared webhooks (--set URL | --clear) [--settings local.settings.json]

`run` is the Functions job itself, with the same settings, read from the
environment or from a local.settings.json (for containers, cron and debugging);
it uploads to Numerai only with `--submit` (`--test-mode` does every step but
the upload; one of the two is required), and exits 1 when the run failed.
`predict`, `models` and `doctor` live in shared/commands/ (docs/command-line.md
says what each does). `report-page` rewrites `reports/index.html` in the
results container from its reports (as every run does) and can save a copy.
`webhooks` registers URL (the app's /api/numerai-webhook with its function key), with
`model=<name>` added to its query, as Numerai's submission webhook of each model the
manifest submits, or clears them; it exits 1 when any model's failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.commands import predict as predict_command
from shared.commands.environ import command_environ
from shared.console import configure_console
from shared.errors import AppError, SettingsError
from shared.settings import DEFAULT_BATCH_ROWS, load_settings

log = logging.getLogger(__name__)


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
        "--data",
        type=Path,
        default=None,
        help="folder with features.json and live.parquet (with --round-from-numerai: where the "
        "round's files are downloaded, default .work/round)",
    )
    predict.add_argument(
        "--round-from-numerai",
        action="store_true",
        help="download the current round's files (each data version the models use) from Numerai",
    )
    predict.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="a local.settings.json (NUMERAI_DATA_VERSION, NUMERAI_API_URL) for --round-from-numerai",
    )
    predict.add_argument("--manifest", type=Path, required=True, help="the models.json to run")
    predict.add_argument(
        "--out", type=Path, required=True, help="folder for the CSVs and summary.json"
    )
    predict.add_argument(
        "--data-version",
        default=None,
        help="the version of the entries that name none (default NUMERAI_DATA_VERSION, or v5.3)",
    )
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
    _models_parser(commands, common)
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check everything the next run needs, at once; exit 1 when something would fail it",
    )
    doctor.add_argument(
        "--settings", type=Path, default=None, help="a local.settings.json, as for `run`"
    )
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


def _models_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    models = commands.add_parser(
        "models", parents=[common], help="add, list, remove or check the deployed models"
    )
    actions = models.add_subparsers(dest="action", required=True)
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument(
        "--settings", type=Path, default=None, help="a local.settings.json, as for `run`"
    )
    add = actions.add_parser(
        "add",
        parents=[common, settings],
        help="upload a model file and write its manifest entry (replacing one of the same name)",
    )
    add.add_argument("file", type=Path, help="the model file")
    add.add_argument("--name", help="the Numerai model's name (default: from the file's name)")
    add.add_argument("--format", help="the format (default: told from the file's bytes)")
    add.add_argument("--blob", help="its blob name in the models container (default: its name)")
    add.add_argument("--features", help="a feature set (small, medium, all) or columns a,b,c")
    add.add_argument("--output", choices=("rank", "raw"))
    add.add_argument("--data-version", help="the data version it was trained on (v5.2, …)")
    add.add_argument("--method", choices=("predict", "predict_proba"))
    add.add_argument(
        "--trust-pickle", action="store_true", help="load a pickle (numerai_pickle, sklearn)"
    )
    add.add_argument("--no-submit", action="store_true", help="predict for ensembles only")
    add.add_argument("--min-benchmark-corr", type=float, default=None)
    actions.add_parser(
        "list",
        parents=[common, settings],
        help="the entries, their files' size, ETag and last change, and their last submission",
    )
    remove = actions.add_parser(
        "remove", parents=[common, settings], help="remove an entry, and its file"
    )
    remove.add_argument("name")
    remove.add_argument(
        "--keep-file", action="store_true", help="leave the model file in the container"
    )
    check = actions.add_parser(
        "check",
        parents=[common, settings],
        help="a test run of the models on the current round: everything but the upload",
    )
    check.add_argument("--models", type=_names, default=None, help="comma-separated subset")


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
    if args.command == "models":
        from shared.commands import models

        return models.main(args)
    if args.command == "doctor":
        return _doctor(args)
    return predict_command.main(args)


def _run(args: argparse.Namespace) -> int:
    # The job's modules (numerapi, pandas, Blob Storage: about 1.7 s) only for the commands that
    # need them: `predict` starts its fork server sooner without them.
    from shared.report import Mode
    from shared.run.job import run_job
    from shared.triggers.executors import executor_for

    try:
        environ = command_environ(args.settings)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    mode = Mode.TEST if args.test_mode else Mode.SCHEDULED
    report = run_job(mode, executor_for, args.models, environ=environ)
    log.info("%s", report.summary())
    return 1 if report.failed else 0


def _doctor(args: argparse.Namespace) -> int:
    from shared.commands import doctor

    try:
        environ = command_environ(args.settings)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    return doctor.main(environ)


def _report_page(args: argparse.Namespace) -> int:
    from shared.report_page import settings_results, write_report_page

    try:
        results = settings_results(command_environ(args.settings))
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
            load_settings(command_environ(args.settings)), None if args.clear else args.url
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
