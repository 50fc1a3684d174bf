"""Every error this app raises on purpose, in one place.

Every message is written for the Numerai participant who reads the run report:
it names the setting, model, file or column at fault and, where it can, what to do.
"""

from __future__ import annotations


class AppError(Exception):
    """Base class: anything we raise deliberately, with a message meant for the user."""


# Inputs: settings, manifest, requests


class SettingsError(AppError):
    """An app setting is missing or malformed."""


class ManifestError(AppError):
    """The model manifest cannot be read or does not describe valid models."""


class BadRequest(AppError):
    """An HTTP request (the test run's, the webhook's) cannot be understood; answered with 400."""


class RunsError(AppError):
    """A runs API request that cannot be answered with a run; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# Models and their predictions


class ModelLoadError(AppError):
    """A model file could not be loaded."""


class PredictionError(AppError):
    """A model failed while predicting, or returned something unusable."""


class RejectedPredictions(PredictionError):
    """A model predicted, but what it returned breaks the rules; `csv` keeps it for inspection."""

    def __init__(self, message: str, csv: str) -> None:
        super().__init__(message)
        self.csv = csv


class DataError(AppError):
    """The round's data is unreadable or lacks what the models need."""


class DataVersionUnavailable(DataError):
    """Numerai does not list a data version for the round; no retry can help."""


class SubmissionInvalid(AppError):
    """Predictions break Numerai's submission rules; they must not be uploaded."""


class PostprocessError(AppError):
    """Predictions could not be combined, neutralized or checked against the benchmark."""


# The services a run talks to


class StorageError(AppError):
    """Blob Storage could not be read or written."""


class QueueError(AppError):
    """The task queue could not be reached or written."""


class BadTask(AppError):
    """A queue message that is not one of this app's tasks."""


class NumeraiApiError(AppError):
    """The Numerai API refused a request or could not be reached."""


class NumeraiKeysRefused(NumeraiApiError):
    """Numerai refused the API keys (wrong, revoked, or without the scope the request needs)."""


class NumeraiUnanswered(NumeraiApiError):
    """The Numerai API gave no usable answer (timed out, broke off, 5xx): what was asked may or may not have happened."""


class UploadError(NumeraiApiError):
    """A submission could not be uploaded or could not be confirmed."""


class SubmissionUnknown(AppError):
    """A submission may exist at Numerai, and this run could not find out."""


# The model workers


class ServerGone(AppError):
    """The fork server exited while workers were still expected from it."""


class IsolationError(AppError):
    """A worker could not be isolated from the processes above it, so its model was not run."""


class PoolClosed(AppError):
    """The worker pool was closed (the interpreter is exiting): no more workers can be started."""


# The run itself


class RunLocked(AppError):
    """Another run holds the lock."""


class LockLost(AppError):
    """This run's lease ended while it worked: another run may have started."""


class RunDeadlinePassed(AppError):
    """The run is out of time (RUN_DEADLINE_SECONDS); what it made is archived for the next run."""


class RunFailed(AppError):
    """Raised after the report is saved, so that Azure marks the invocation failed."""


class ReportPageError(AppError):
    """A stored report or predictions file cannot be shown on the report page."""
