"""In-memory stand-ins for the services a step talks through, for the unit tests of the steps.

Each fake has the method names of the class it stands for (Ledger, Archive, RunRecords,
ModelStore, NumeraiClient, RunLock) and keeps what it was given in plain dicts and lists,
so a test arranges its state directly and asserts on what the step left behind. Failures
are switched on per fake: a test says which call fails and how.

Nothing here talks to Azurite, the Numerai sandbox or a worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from shared.data.predictions_csv import to_csv
from shared.errors import LockLost, NumeraiApiError, StorageError
from shared.manifest import ModelSpec
from shared.numerai_client import ListedSubmission, RoundInfo
from shared.report import Mode
from shared.settings import Settings
from shared.steps.benchmark_check import Benchmark
from shared.steps.context import RoundContext, Services
from shared.steps.predict import Prediction
from shared.storage import Results
from shared.storage.archive import PREDICTIONS, Archived, predictions_blob
from shared.storage.ledger import SubmissionIntent, SubmissionRecord
from shared.worker.protocol import ModelOutcome

ROUND = 1200
RUN_ID = "20261203T000000000000Z-scheduled-unit0000"
IDS = [f"n{i:03d}" for i in range(10)]  # a round small enough to read in a failure message


class FakeLedger:
    """Ledger: confirmed submissions and intents by (round, model)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, str], SubmissionRecord] = {}
        self.intents: dict[tuple[int, str], SubmissionIntent] = {}
        self.fail_record: StorageError | None = None  # raised by record()
        self.fail_intent: StorageError | None = None  # raised by record_intent()

    def record(self, record: SubmissionRecord) -> None:
        if self.fail_record is not None:
            raise self.fail_record
        self.entries[(record.round_number, record.model_name)] = record

    def submission_for(self, round_number: int, model_name: str) -> SubmissionRecord | None:
        return self.entries.get((round_number, model_name))

    def records(self, round_number: int | None = None) -> list[SubmissionRecord]:
        return sorted(
            (r for r in self.entries.values() if round_number in (None, r.round_number)),
            key=lambda r: (r.round_number, r.model_name),
        )

    def record_intent(self, intent: SubmissionIntent) -> None:
        if self.fail_intent is not None:
            raise self.fail_intent
        self.intents[(intent.round_number, intent.model_name)] = intent

    def intent_for(self, round_number: int, model_name: str) -> SubmissionIntent | None:
        return self.intents.get((round_number, model_name))

    def clear_intent(self, round_number: int, model_name: str) -> None:
        self.intents.pop((round_number, model_name), None)

    def add(self, name: str, submission_id: str, round_number: int = ROUND) -> None:
        """A submission an earlier run recorded."""
        self.entries[(round_number, name)] = SubmissionRecord(
            round_number, name, f"id-{name}", submission_id, "2026-12-03T00:00:00+00:00"
        )


class FakeArchive:
    """Archive: CSV text and metadata by (folder, round, model)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, int, str], Archived] = {}
        self.fail_write: StorageError | None = None  # raised by write()

    def write(
        self,
        round_number: int,
        model_name: str,
        csv_text: str,
        folder: str = PREDICTIONS,
        metadata: dict[str, str] | None = None,
    ) -> str:
        if self.fail_write is not None:
            raise self.fail_write
        self.blobs[(folder, round_number, model_name)] = Archived(csv_text, dict(metadata or {}))
        return predictions_blob(folder, round_number, model_name)

    def read(self, round_number: int, model_name: str, folder: str = PREDICTIONS) -> str | None:
        found = self.blobs.get((folder, round_number, model_name))
        return None if found is None else found.csv

    def archived(self, round_number: int, model_name: str) -> Archived | None:
        return self.blobs.get((PREDICTIONS, round_number, model_name))

    def benchmark_history(self, model_name: str, round_number: int, rounds: int) -> list[float]:
        found = []
        for earlier in range(round_number - 1, max(round_number - 1 - rounds, -1), -1):
            kept = self.blobs.get((PREDICTIONS, earlier, model_name))
            if kept is not None and "benchmark_corr" in kept.metadata:
                found.append(float(kept.metadata["benchmark_corr"]))
        return found


class FakeRunRecords:
    """RunRecords: reports (with a version number for an ETag), task results, marks."""

    def __init__(self) -> None:
        self.window_checked: dict[int, str] = {}
        self.reports: dict[str, tuple[str, int]] = {}  # run id → (report JSON, version)
        self.results: dict[str, dict[str, str]] = {}  # run id → model → result JSON
        self.released: dict[tuple[str, str], tuple[str, bool]] = {}  # → (by, sent)
        self.published_runs: set[str] = set()

    def write_report(self, run_id: str, report_json: str) -> str:
        _, version = self.reports.get(run_id, ("", 0))
        self.reports[run_id] = (report_json, version + 1)
        return f"reports/{run_id}.json"

    def read_report_for_update(self, run_id: str) -> tuple[str, str] | None:
        found = self.reports.get(run_id)
        return None if found is None else (found[0], str(found[1]))

    def replace_report(self, run_id: str, report_json: str, etag: str) -> bool:
        if run_id not in self.reports or str(self.reports[run_id][1]) != etag:
            return False
        self.write_report(run_id, report_json)
        return True

    def add_task_result(self, run_id: str, model_name: str, result_json: str) -> bool:
        kept = self.results.setdefault(run_id, {})
        if model_name in kept:  # first come, first kept
            return False
        kept[model_name] = result_json
        return True

    def task_result(self, run_id: str, model_name: str) -> str | None:
        return self.results.get(run_id, {}).get(model_name)

    def task_result_names(self, run_id: str) -> set[str]:
        return set(self.results.get(run_id, {}))

    def task_results(self, run_id: str) -> dict[str, str]:
        return dict(self.results.get(run_id, {}))

    def replace_task_result(self, run_id: str, model_name: str, result_json: str) -> None:
        self.results.setdefault(run_id, {})[model_name] = result_json

    def mark_released(self, run_id: str, model_name: str, by: str) -> bool:
        first = (run_id, model_name) not in self.released
        self.released.setdefault((run_id, model_name), (by, False))
        return first

    def mark_sent(self, run_id: str, model_name: str, by: str) -> None:
        self.released[(run_id, model_name)] = (by, True)

    def unsent_release_by(self, run_id: str, model_name: str) -> str | None:
        by, sent = self.released.get((run_id, model_name), ("", True))
        return None if sent else by

    def mark_published(self, run_id: str) -> None:
        self.published_runs.add(run_id)

    def published(self, run_id: str) -> bool:
        return run_id in self.published_runs

    def window_checked_by(self, round_number: int) -> str | None:
        return self.window_checked.get(round_number)

    def mark_window_checked(self, round_number: int, run_id: str) -> bool:
        return self.window_checked.setdefault(round_number, run_id) == run_id


class FakeModelStore:
    """ModelStore: blob name → text (the manifest), and an ETag per model file."""

    def __init__(self, texts: dict[str, str] | None = None) -> None:
        self.texts = dict(texts or {})
        self.fetched: list[str] = []

    def read_text(self, blob_name: str, max_bytes: int = 0) -> str:
        if blob_name not in self.texts:
            raise StorageError(f"blob '{blob_name}' not found")
        return self.texts[blob_name]

    def etag(self, blob_name: str) -> str:
        return f"etag-{blob_name}"

    def fetch(self, blob_name: str) -> Path:
        # A unit test never runs a worker: a model that would be predicted fails, and says so.
        self.fetched.append(blob_name)
        raise StorageError(f"blob '{blob_name}' is not downloaded in a unit test")


class FakeNumerai:
    """NumeraiClient: one round, one account, and the submissions Numerai lists, by model id.

    `create_submission` makes a submission and lists it, unless told to fail; a test can
    also make it create one and fail anyway (`created_then` : the answer was lost).
    """

    def __init__(
        self, round_: RoundInfo | None = None, account: dict[str, str] | None = None
    ) -> None:
        self.round = round_
        self.account = dict(account or {})
        # model id → filename → (submission id, when it was made, the round it counts for)
        self.listed: dict[str, dict[str, tuple[str, datetime, int | None]]] = {}
        self.versions: list[str] = ["v5.3"]
        self.uploads: list[tuple[str, str, str]] = []  # (model name, model id, CSV text)
        self.created: list[tuple[str, str, str | None]] = []  # (model id, filename, trigger id)
        self.fail_create: NumeraiApiError | None = None
        self.created_then: NumeraiApiError | None = None  # created (and listed), then this raised
        self.list_after_create = True  # False: the list lags behind create_submission
        self.fail_listing: NumeraiApiError | None = None
        self.fail_versions: NumeraiApiError | None = None

    def current_round(self) -> RoundInfo | None:
        return self.round

    def model_ids(self) -> dict[str, str]:
        return dict(self.account)

    def data_versions(self, round_number: int) -> list[str]:
        if self.fail_versions is not None:
            raise self.fail_versions
        return list(self.versions)

    def upload(self, model_name: str, model_id: str, csv_path: Path) -> str:
        self.uploads.append((model_name, model_id, csv_path.read_text()))
        return f"{model_name}-{len(self.uploads)}.csv"

    def create_submission(self, model_id: str, filename: str, trigger_id: str | None = None) -> str:
        if self.fail_create is not None:
            raise self.fail_create
        self.created.append((model_id, filename, trigger_id))
        submission_id = f"sub-{len(self.created)}"
        if self.list_after_create:
            self.list(model_id, filename, submission_id)
        if self.created_then is not None:
            raise self.created_then
        return submission_id

    def find_submission(self, model_id: str, filename: str) -> str | None:
        if self.fail_listing is not None:
            raise self.fail_listing
        found = self.listed.get(model_id, {}).get(filename)
        return None if found is None else found[0]

    def round_submissions(self, model_id: str, round_number: int) -> dict[str, ListedSubmission]:
        if self.fail_listing is not None:
            raise self.fail_listing
        return {
            sid: ListedSubmission(sid, when, None)
            for sid, when, counts_for in self.listed.get(model_id, {}).values()
            if counts_for == round_number
        }

    def list(
        self,
        model_id: str,
        filename: str,
        submission_id: str,
        when: datetime | None = None,
        round_number: int | None = None,
    ) -> None:
        """Make Numerai list a submission (made now unless `when`), counted for `round_number`
        (the current round's unless given)."""
        counts_for = (
            round_number
            if round_number is not None
            else (self.round.number if self.round is not None else None)
        )
        self.listed.setdefault(model_id, {})[filename] = (
            submission_id,
            when or datetime.now(UTC),
            counts_for,
        )


class FakeLock:
    """RunLock: confirms `holds_for` times, then is lost; or, given `fails_at`, fails only then.

    A real renewal may fail once and pass later (a storage hiccup): `fails_at` shows whether
    a run goes on uploading after one failed confirmation.
    """

    def __init__(self, holds_for: int = 10**6, fails_at: frozenset[int] = frozenset()) -> None:
        self.holds_for = holds_for
        self.fails_at = fails_at
        self.confirms = 0

    def confirm(self) -> None:
        self.confirms += 1
        if self.confirms > self.holds_for or self.confirms in self.fails_at:
            raise LockLost("this run could not confirm its lock 'locks/scheduled-run' (lease lost)")


@dataclass
class FakeInputs:
    """RoundInputs: the round's benchmark predictions and live ids, given rather than downloaded."""

    benchmark: Benchmark = field(
        default_factory=lambda: Benchmark(None, "no benchmark in this test")
    )
    live_ids: pd.Index = field(default_factory=lambda: pd.Index(IDS, name="id"))

    def features(self, entry: str, selection: Any) -> pd.DataFrame:
        raise AssertionError("these unit tests do not neutralize")


@dataclass
class World:
    """A run's context and every fake behind it, for a test to arrange and inspect."""

    ctx: RoundContext
    numerai: FakeNumerai
    ledger: FakeLedger
    archive: FakeArchive
    runs: FakeRunRecords
    models: FakeModelStore


def world(
    mode: Mode = Mode.SCHEDULED,
    *,
    account: dict[str, str] | None = None,
    round_: RoundInfo | None = None,
    lock: FakeLock | None = None,
    work_dir: Path = Path("/nonexistent"),
    **settings: Any,
) -> World:
    """A RoundContext for round ROUND over fresh fakes; `settings` override Settings' fields."""
    numerai = FakeNumerai(round_ or open_round(), account)
    ledger, archive, runs, models = FakeLedger(), FakeArchive(), FakeRunRecords(), FakeModelStore()
    # Page and locks are never reached by a step: None makes any use of them fail loudly.
    results = Results(
        ledger=ledger,
        archive=archive,
        runs=runs,  # type: ignore[arg-type]
        page=None,
        locks=None,
    )  # type: ignore[arg-type]
    services = Services(
        Settings("public-id", "secret-key", work_dir=work_dir, **settings), numerai, models, results
    )  # type: ignore[arg-type]
    ctx = RoundContext(services, mode, RUN_ID, ROUND, lock=lock)  # type: ignore[arg-type]
    return World(ctx, numerai, ledger, archive, runs, models)


def open_round(number: int = ROUND) -> RoundInfo:
    """A round whose staking window is open now."""
    now = datetime.now(UTC)
    return RoundInfo(number, now - timedelta(hours=1), now + timedelta(hours=1))


def closed_round(number: int = ROUND, closed_ago: timedelta = timedelta(minutes=45)) -> RoundInfo:
    """A round whose staking window closed `closed_ago`."""
    now = datetime.now(UTC)
    return RoundInfo(number, now - closed_ago - timedelta(hours=1), now - closed_ago)


def model(name: str, **fields: Any) -> ModelSpec:
    """A manifest entry with a file (or an ensemble, given `members`)."""
    if "members" in fields:
        return ModelSpec(name=name, **fields)
    return ModelSpec(name=name, file=f"{name}.txt", format="lightgbm", **fields)


def csv_of(values: list[float], ids: list[str] = IDS) -> str:
    """Predictions CSV text, as a worker writes it."""
    return to_csv(pd.Series(values, index=ids))


RISING = [(i + 0.5) / len(IDS) for i in range(len(IDS))]  # predictions in (0, 1), in id order
FALLING = RISING[::-1]


def predicted(
    spec: ModelSpec,
    csv: str | None = None,
    *,
    ok: bool = True,
    error: str | None = None,
    from_archive: bool = False,
) -> Prediction:
    """A model's prediction as the worker step hands it on."""
    text = csv_of(RISING) if csv is None and ok else csv
    rows = 0 if text is None else text.count("\n") - 1
    outcome = ModelOutcome(
        name=spec.name, ok=ok, rows=rows, error=error, csv=text, has_predictions=text is not None
    )
    return Prediction(spec, outcome, f"etag-{spec.name}", text, from_archive=from_archive)
