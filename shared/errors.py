"""The errors this app raises on purpose.

Every message is written for the Numerai participant who reads the run report:
it names the setting, model, file or column at fault and, where it can, what to do.
"""

from __future__ import annotations


class SubmitterError(Exception):
    """Base class: anything we raise deliberately, with a message meant for the user."""


class SettingsError(SubmitterError):
    """An app setting is missing or malformed."""


class ManifestError(SubmitterError):
    """The model manifest cannot be read or does not describe valid models."""


class ModelLoadError(SubmitterError):
    """A model file could not be loaded."""


class PredictionError(SubmitterError):
    """A model failed while predicting, or returned something unusable."""


class RejectedPredictions(PredictionError):
    """A model predicted, but what it returned breaks the rules; `csv` keeps it for inspection."""

    def __init__(self, message: str, csv: str) -> None:
        super().__init__(message)
        self.csv = csv


class DataError(SubmitterError):
    """The round's data is unreadable or lacks what the models need."""


class DataVersionUnavailable(DataError):
    """Numerai does not list a data version for the round; no retry can help."""


class SubmissionInvalid(SubmitterError):
    """Predictions break Numerai's submission rules; they must not be uploaded."""


class StorageError(SubmitterError):
    """Blob Storage could not be read or written."""


class NumeraiApiError(SubmitterError):
    """The Numerai API refused a request or could not be reached."""


class NumeraiUnanswered(NumeraiApiError):
    """The Numerai API gave no usable answer (timed out, broke off, 5xx): what was asked may or may not have happened."""


class UploadError(NumeraiApiError):
    """A submission could not be uploaded or could not be confirmed."""


class ReportPageError(SubmitterError):
    """A stored report or predictions file cannot be shown on the report page."""


class PostprocessError(SubmitterError):
    """Predictions could not be combined, neutralized or checked against the benchmark."""
