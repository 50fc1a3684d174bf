"""The prediction archive: every model's predictions per round, with what they were made from.

Predictions are archived before anything is uploaded, so nothing computed is
lost; a later run of the same round reuses them when the model file, data
version and manifest entry all match. Test runs write to a folder of their own
so that they never replace what was uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError

from shared.storage.container import CSV, Container, segment

PREDICTIONS = "predictions"
TEST_PREDICTIONS = "test-predictions"


@dataclass(frozen=True)
class Archived:
    """Predictions kept in the results container, and what they were made from."""

    csv: str
    metadata: dict[str, str]


class Archive:
    """`predictions/round-N/<model>.csv` (and `test-predictions/…`), with metadata."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def write(
        self,
        round_number: int,
        model_name: str,
        csv_text: str,
        folder: str = PREDICTIONS,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Store (or replace) a model's predictions for a round; returns the blob name.

        `metadata` says what the predictions were made from, so a later run can reuse them.
        """
        name = predictions_blob(folder, round_number, model_name)
        self._container.upload(name, csv_text, CSV, "predictions", metadata)
        return name

    def read(self, round_number: int, model_name: str, folder: str = PREDICTIONS) -> str | None:
        """A model's stored predictions for a round, or None if there are none."""
        return self._container.read_optional(
            predictions_blob(folder, round_number, model_name), "predictions"
        )

    def archived(self, round_number: int, model_name: str) -> Archived | None:
        """A scheduled run's archived predictions for a round, with their metadata, or None."""
        name = predictions_blob(PREDICTIONS, round_number, model_name)
        with self._container.errors(name, "read", "predictions"):
            download = self._container.download_optional(name)
            return (
                None
                if download is None
                else Archived(download.readall(), dict(download.properties.metadata or {}))
            )

    def benchmark_history(self, model_name: str, round_number: int, rounds: int) -> list[float]:
        """The benchmark correlations archived with the model's predictions of the `rounds` rounds before this one.

        Newest first; rounds without archived predictions, or archived before the check
        existed, are left out.
        """
        found = []
        for earlier in range(round_number - 1, max(round_number - 1 - rounds, -1), -1):
            name = predictions_blob(PREDICTIONS, earlier, model_name)
            with self._container.errors(name, "read", "predictions"):
                try:
                    metadata = (
                        self._container.client.get_blob_client(name).get_blob_properties().metadata
                        or {}
                    )
                except ResourceNotFoundError:
                    continue
            try:
                found.append(float(metadata["benchmark_corr"]))
            except (KeyError, ValueError):
                continue
        return found

    def read_head(self, blob_name: str, max_bytes: int) -> tuple[str, bool]:
        """An archived file's first `max_bytes` bytes as text, and whether it was longer."""
        return self._container.read_head(blob_name, max_bytes)


def predictions_blob(folder: str, round_number: int, model_name: str) -> str:
    """The blob name of a model's predictions for a round in `folder`."""
    return f"{segment(folder, 'folder')}/round-{round_number:d}/{segment(model_name, 'model name')}.csv"
