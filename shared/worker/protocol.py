"""What the run's process and a model's worker process say to each other.

The parent writes a `WorkRequest` as JSON; the worker writes its predictions as
a CSV file and a `ModelOutcome` as JSON beside it, and notes each phase it
enters in a file, so that a worker stopped by its limits is reported with the
phase it was in. No user object ever crosses the boundary pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path

from shared.manifest import ModelSpec

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.csv"
PHASE_FILE = "phase"
# What the worker and the model print (stdout and stderr), capped; see forkserver.py.
LOG_FILE = "worker.log"


class Phase(str, Enum):
    """The steps of a worker, in order."""

    STARTING = "starting"  # the interpreter and the engine's own imports
    LOADING = "loading"
    PREDICTING = "predicting"
    VALIDATING = "validating"


@dataclass(frozen=True)
class WorkRequest:
    """One model to predict for one round, and where the round's files are."""

    spec: ModelSpec
    model_path: Path
    live_path: Path
    features_path: Path
    benchmark_path: Path | None
    data_version: str
    batch_rows: int
    output_dir: Path

    def write(self) -> Path:
        """Write the request into its output folder; returns the file's path."""
        document = {
            "spec": self.spec.model_dump(mode="json"),
            **{f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "spec"},
        }
        path = self.output_dir / REQUEST_FILE
        path.write_text(json.dumps(document))
        return path

    @classmethod
    def read(cls, path: Path) -> WorkRequest:
        """The request a parent wrote with `write`."""
        document = json.loads(path.read_text())
        paths = {"model_path", "live_path", "features_path", "benchmark_path", "output_dir"}
        values = {k: Path(v) if k in paths and v is not None else v for k, v in document.items()}
        values["spec"] = ModelSpec.model_validate(document["spec"])
        return cls(**values)


@dataclass
class ModelOutcome:
    """What happened to one model: written by its worker, completed by the supervisor.

    `csv` holds the predictions whenever the model produced any, valid or not
    (so that nothing computed is lost); `ok` says whether they may be uploaded;
    `warnings` what could not be checked about a model that ran; `output` the last
    lines the model printed (its worker's log), redacted, filled in by the supervisor.
    """

    name: str
    ok: bool = False
    rows: int = 0
    load_seconds: float = 0.0
    predict_seconds: float = 0.0
    error: str | None = None
    has_predictions: bool = False
    peak_memory_mb: float = 0.0
    # How far the disk's free space fell while it ran, its own folder removed: what it left elsewhere.
    disk_left_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    csv: str | None = None

    def write(self, output_dir: Path) -> None:
        """Write the outcome (without the CSV text, which has a file of its own)."""
        document = {k: v for k, v in asdict(self).items() if k != "csv"}
        temporary = output_dir / f"{RESULT_FILE}.tmp"
        temporary.write_text(json.dumps(document))
        temporary.replace(output_dir / RESULT_FILE)  # whole or absent, should the worker die

    @classmethod
    def read(cls, output_dir: Path) -> ModelOutcome | None:
        """The outcome a worker wrote, with its predictions; None if it wrote none."""
        try:
            outcome = cls(**json.loads((output_dir / RESULT_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if outcome.has_predictions:
            outcome.csv = (output_dir / PREDICTIONS_FILE).read_text()
        return outcome

    def fail(self, message: str) -> None:
        """Mark the model failed, keeping any predictions it made."""
        self.ok = False
        self.error = message


def _plain(value: object) -> object:
    # Absolute: the worker starts in a folder of its own, not in the run's.
    return str(value.absolute()) if isinstance(value, Path) else value
