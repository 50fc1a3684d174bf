"""How much the app says: what a participant needs, not every HTTP request of the Azure SDK.

The Azure SDK logs each request's and response's headers at INFO (its
`http_logging_policy`): one eight-model test run wrote 2,599 such lines of
3,361. They are for debugging the SDK, so the `azure` loggers stop at WARNING
everywhere, in the Functions host's logs (and Application Insights) as on a
console. On the command line the default is quieter still: one line per model
and the run's summary; `-v` adds the steps, `-vv` everything, headers included.
"""

from __future__ import annotations

import logging

# The command line's own answers (shared/cli.py, shared/commands/): the run's summary, a line per model.
SUMMARY_LOGGERS = ("shared.cli", "shared.commands")
LIBRARY_LOGGERS = ("azure",)


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Stop the Azure SDK's per-request logging below `level`."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def configure_console(verbosity: int = 0) -> None:
    """Log to stderr: 0, the summary lines only; 1, every step; 2, everything."""
    if verbosity <= 0:
        handler = logging.StreamHandler()
        handler.setFormatter(_PlainFormatter())
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
        for name in SUMMARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        return
    logging.basicConfig(
        level=logging.INFO if verbosity == 1 else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_libraries(logging.WARNING if verbosity == 1 else logging.DEBUG)


class _PlainFormatter(logging.Formatter):
    """The message alone; a warning or an error says which it is."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno <= logging.INFO else f"{record.levelname}: {message}"
