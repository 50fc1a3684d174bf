"""Blob Storage access: the manifest and model files in, each run's results out.

Locally the app talks to Azurite through a connection string; in Azure it uses an account URL
and the Function App's managed identity, so no account key exists in its settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobClient,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    ExponentialRetry,
    StorageErrorCode,
    StorageStreamDownloader,
)

from shared.errors import StorageError
from shared.run_lock import RunLock

log = logging.getLogger(__name__)

CONNECTION_STRING_SETTING = "MODELS_STORAGE_CONNECTION_STRING"
ACCOUNT_URL_SETTING = "MODELS_STORAGE_ACCOUNT_URL"

PREDICTIONS = "predictions"
TEST_PREDICTIONS = "test-predictions"

_JSON = ContentSettings(content_type="application/json")
_CSV = ContentSettings(content_type="text/csv")
_HTML = ContentSettings(content_type="text/html; charset=utf-8")
# The report page, beside the reports it is made from.
REPORT_PAGE = "reports/index.html"
_MAX_REASON_CHARS = 300
# Texts read whole into memory (the manifest): a few KB in practice.
MAX_TEXT_BYTES = 1024 * 1024


def blob_service_client(
    *,
    connection_string: str | None,
    account_url: str | None,
    managed_identity_client_id: str | None,
    timeout_seconds: float,
) -> BlobServiceClient:
    """Build the Blob service client from exactly one of a connection string or an account URL.

    `timeout_seconds` bounds connecting and each socket read (not a whole download), and
    retries are few and short, so a dead endpoint fails a run in seconds, not minutes.
    """
    if bool(connection_string) == bool(account_url):
        state = "both are set" if connection_string else "neither is set"
        raise StorageError(
            f"set exactly one of {CONNECTION_STRING_SETTING} (local development, e.g. Azurite) "
            f"or {ACCOUNT_URL_SETTING} (in Azure, with the managed identity); {state}"
        )
    options = client_options(timeout_seconds)
    if connection_string:
        try:
            return BlobServiceClient.from_connection_string(connection_string, **options)
        except ValueError:
            # `from None`: the original error may quote the string, and the string holds a key.
            raise StorageError(
                f"{CONNECTION_STRING_SETTING} is not a valid storage connection string"
            ) from None
    assert account_url  # the check above leaves only this case
    from azure.identity import DefaultAzureCredential  # heavy import, only needed in Azure

    credential = DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    try:
        return BlobServiceClient(account_url, credential=credential, **options)
    except ValueError:
        raise StorageError(
            f"{ACCOUNT_URL_SETTING} is not a valid account URL; "
            "expected https://<account>.blob.core.windows.net"
        ) from None


def client_options(timeout_seconds: float) -> dict[str, object]:
    """Timeouts and a short retry policy for a storage client (blob or queue)."""
    # The storage SDK ignores azure-core's retry_backoff_factor: its own ExponentialRetry
    # defaults to 15 s + 3**n back-offs (about 84 s over 3 retries), so configure it here.
    # Sleeps are about 3, 5 and 9 s. A refused or timed-out connection is retried only once:
    # it almost always means a wrong URL, DNS or firewall, which waiting does not fix.
    retry = ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1, retry_connect=1
    )
    return {
        "connection_timeout": timeout_seconds,
        "read_timeout": timeout_seconds,
        "retry_policy": retry,
    }


@dataclass(frozen=True)
class Archived:
    """Predictions kept in the results container, and what they were made from."""

    csv: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class SubmissionRecord:
    """One model's confirmed submission for one round."""

    round_number: int
    model_name: str
    model_id: str
    submission_id: str
    submitted_at: str  # ISO 8601, UTC

    def __post_init__(self) -> None:
        if type(self.round_number) is not int or self.round_number < 0:
            raise ValueError(f"round_number must be an integer >= 0, not {self.round_number!r}")
        for name in ("model_name", "model_id", "submission_id", "submitted_at"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        try:
            offset = datetime.fromisoformat(self.submitted_at).utcoffset()
        except ValueError:
            raise ValueError(f"submitted_at is not ISO 8601: {self.submitted_at!r}") from None
        if offset != timedelta(0):
            raise ValueError(f"submitted_at must be in UTC, not {self.submitted_at!r}")

    def to_json(self) -> str:
        """Serialise as a JSON object."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SubmissionRecord:
        """Parse `to_json` output; raises ValueError if it is not a valid record."""
        return cls(**_record_fields(cls, text, "a submission record"))


@dataclass(frozen=True)
class SubmissionIntent:
    """Written before `create_submission` is called: this run is about to submit `filename`.

    An intent without a ledger entry means a run stopped, or lost Numerai's answer,
    between asking Numerai to create the submission and recording it. The next run
    looks for `filename` among the model's submissions before it submits anything.
    """

    round_number: int
    model_name: str
    model_id: str
    filename: str  # as submission_upload_auth named the upload; create_submission refers to it
    run_id: str

    def to_json(self) -> str:
        """Serialise as a JSON object."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SubmissionIntent:
        """Parse `to_json` output; raises ValueError if it is not a valid intent."""
        return cls(**_record_fields(cls, text, "a submission intent"))


def _record_fields(cls: type, text: str, what: str) -> dict[str, object]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    names = [f.name for f in fields(cls)]
    missing = [name for name in names if name not in data]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    return {name: data[name] for name in names}


class ModelStore:
    """Reads the manifest and model files from the models container."""

    def __init__(self, service: BlobServiceClient, container: str, cache_dir: Path) -> None:
        """`cache_dir` keeps downloaded model files between runs on a warm instance."""
        self._container = service.get_container_client(container)
        self._cache_dir = cache_dir

    def read_text(self, blob_name: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
        """Return a blob's content as text (UTF-8; a byte-order mark is dropped).

        A blob over `max_bytes` is refused by its size, before any of it is downloaded.
        """
        _check_blob_name(blob_name)
        blob = self._container.get_blob_client(blob_name)
        where = f"blob '{blob_name}' in container '{self._container.container_name}'"
        with _azure_errors(self._container, blob_name, "read", "blob"):
            properties = blob.get_blob_properties()
            if properties.size > max_bytes:
                raise StorageError(f"{where} is {properties.size} bytes; at most {max_bytes} are read")
            # The condition keeps a larger blob uploaded since the size check from being read.
            data = blob.download_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified).readall()
        try:
            # utf-8-sig: editors on Windows often save JSON with a BOM, which json.loads rejects.
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise StorageError(f"{where} is not UTF-8 text") from None

    def etag(self, blob_name: str) -> str:
        """The model file's current ETag (one HEAD request), without downloading it."""
        _check_blob_name(blob_name)
        with _azure_errors(self._container, blob_name, "read", "model file"):
            return self._container.get_blob_client(blob_name).get_blob_properties().etag

    def fetch(self, blob_name: str) -> Path:
        """Return a local copy of a model file, downloading it only if its ETag changed.

        The copy lives at `cache_dir/<blob>/<etag>/<basename>`; older versions are deleted.
        """
        _check_blob_name(blob_name)
        blob = self._container.get_blob_client(blob_name)
        with _azure_errors(self._container, blob_name, "download", "model file"):
            try:
                path = self._fetch_current(blob)
            except ResourceModifiedError:
                # Replaced between our HEAD and our GET: fetch the new version instead.
                path = self._fetch_current(blob)
        _remove_other_versions(path.parent)
        return path

    def _fetch_current(self, blob: BlobClient) -> Path:
        etag = blob.get_blob_properties().etag
        target = self._cache_dir / _cache_key(blob.blob_name) / safe_name(etag.strip('"'))
        target /= PurePosixPath(blob.blob_name).name
        if target.is_file():
            log.info("model file '%s' unchanged (ETag %s): cached copy", blob.blob_name, etag)
            return target
        # The condition makes the bytes we save belong to the ETag we file them under.
        download = blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, download.readinto)
        except OSError as exc:
            raise StorageError(
                f"could not save model file '{blob.blob_name}' to the local cache "
                f"{self._cache_dir}: {exc.strerror or exc}"
            ) from exc
        log.info("downloaded model file '%s' (ETag %s)", blob.blob_name, etag)
        return target


class ResultsStore:
    """Keeps what each run did: reports, predictions and the submission ledger."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        """Create the container if it does not exist (Azurite; in Azure the template makes it)."""
        self._container = service.get_container_client(container)
        with _azure_errors(self._container, None, "reach", "container"):
            # Check first: an identity with a container-scoped role may read but not create.
            if not self._container.exists():
                try:
                    self._container.create_container()
                except ResourceExistsError:
                    pass  # another instance created it a moment ago

    def write_report(self, run_id: str, report_json: str) -> str:
        """Store a run's report; returns the blob name."""
        name = f"reports/{_segment(run_id, 'run id')}.json"
        self._upload(name, report_json, _JSON, "report")
        return name

    def read_report(self, run_id: str) -> str:
        """Return a run's report; StorageError if there is none."""
        name = f"reports/{_segment(run_id, 'run id')}.json"
        with _azure_errors(self._container, name, "read", "report"):
            return self._container.download_blob(name, encoding="utf-8").readall()

    def find_report(self, run_id: str) -> str | None:
        """A run's report, or None if there is none."""
        return self._read_optional(f"reports/{_segment(run_id, 'run id')}.json", "report")

    def read_report_for_update(self, run_id: str) -> tuple[str, str] | None:
        """A run's report and its ETag, for `replace_report`; None if there is none."""
        name = f"reports/{_segment(run_id, 'run id')}.json"
        with _azure_errors(self._container, name, "read", "report"):
            download = self._download_optional(name)
            return None if download is None else (download.readall(), download.properties.etag)

    def replace_report(self, run_id: str, report_json: str, etag: str) -> bool:
        """Replace a run's report only if it is still the version `etag` names.

        False when another writer replaced it first: of the tasks that finish a
        fanned-out run together, exactly one writes the final report.
        """
        name = f"reports/{_segment(run_id, 'run id')}.json"
        with _azure_errors(self._container, name, "write", "report"):
            try:
                self._container.upload_blob(name, report_json, overwrite=True, content_settings=_JSON,
                                            etag=etag, match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                return False
        return True

    def write_plan(self, run_id: str, plan_json: str) -> None:
        """Store what a fanned-out run's tasks need: the round, the models and their manifest entries."""
        self._upload(_run_blob(run_id, "plan.json"), plan_json, _JSON, "run plan")

    def read_plan(self, run_id: str) -> str | None:
        """A fanned-out run's plan, or None if the run wrote none."""
        return self._read_optional(_run_blob(run_id, "plan.json"), "run plan")

    def add_task_result(self, run_id: str, model_name: str, result_json: str) -> bool:
        """Keep one model's result of a fanned-out run, unless it already has one; True if this one was kept.

        First come, first kept: a redelivered task, its poison message and the run's
        deadline may each try to write the same model's result.
        """
        name = _run_blob(run_id, f"models/{_segment(model_name, 'model name')}.json")
        return self._create(name, result_json, "task result")

    def mark_window_checked(self, round_number: int, run_id: str) -> bool:
        """Note that `run_id` checked, after the round's staking close, what Numerai lists; True if first."""
        return self._create(_window_mark(round_number), json.dumps({"run_id": run_id}), "window check")

    def window_checked_by(self, round_number: int) -> str | None:
        """The run that checked the round after its staking close, or None if none has yet."""
        text = self._read_optional(_window_mark(round_number), "window check")
        if text is None:
            return None
        try:
            return str(json.loads(text)["run_id"])
        except (ValueError, KeyError, TypeError):
            return "(unreadable)"

    def mark_released(self, run_id: str, model_name: str) -> bool:
        """Mark a fanned-out run's ensemble as sent to the queue; True only for the first to mark it."""
        return self._create(_run_blob(run_id, f"released/{_segment(model_name, 'model name')}"), "{}", "release mark")

    def task_result(self, run_id: str, model_name: str) -> str | None:
        """One model's result of a fanned-out run, or None while it has none."""
        return self._read_optional(_run_blob(run_id, f"models/{_segment(model_name, 'model name')}.json"),
                                   "task result")

    def task_results(self, run_id: str) -> dict[str, str]:
        """Every model result a fanned-out run has so far, by model name."""
        prefix = _run_blob(run_id, "models/")
        with _azure_errors(self._container, prefix, "list", "task results"):
            names = [blob.name for blob in self._container.list_blobs(name_starts_with=prefix)]
        found = {}
        for name in names:
            text = self._read_optional(name, "task result")
            if text is not None:
                found[PurePosixPath(name).stem] = text
        return found
    def report_ids(self) -> list[str]:
        """The run ids of every stored report, oldest first (run ids sort by start time)."""
        with _azure_errors(self._container, "reports/", "list", "reports"):
            names = [blob.name for blob in self._container.list_blobs(name_starts_with="reports/")]
        return sorted(name[len("reports/"):-len(".json")] for name in names if name.endswith(".json"))

    def read_head(self, blob_name: str, max_bytes: int) -> tuple[str, bool]:
        """A blob's first `max_bytes` bytes as text, and whether the blob was longer."""
        _check_blob_name(blob_name)
        with _azure_errors(self._container, blob_name, "read", "blob"):
            # One byte more than is kept tells whether anything was left out.
            data = self._container.download_blob(blob_name, offset=0, length=max_bytes + 1).readall()
        return data[:max_bytes].decode("utf-8", errors="replace"), len(data) > max_bytes

    def write_page(self, html: str) -> str:
        """Store (or replace) the report page; returns its blob name."""
        self._upload(REPORT_PAGE, html, _HTML, "report page")
        return REPORT_PAGE

    def read_page(self) -> str | None:
        """The stored report page, or None if none has been written yet."""
        return self._read_optional(REPORT_PAGE, "report page")

    def write_predictions(self, round_number: int, model_name: str, csv_text: str,
                          folder: str = PREDICTIONS, metadata: dict[str, str] | None = None) -> str:
        """Store (or replace) a model's predictions for a round; returns the blob name.

        Test runs write to TEST_PREDICTIONS so that they never replace what was uploaded.
        `metadata` says what the predictions were made from, so a later run can reuse them.
        """
        name = _predictions_name(folder, round_number, model_name)
        self._upload(name, csv_text, _CSV, "predictions", metadata)
        return name

    def archived_predictions(self, round_number: int, model_name: str) -> Archived | None:
        """A scheduled run's archived predictions for a round, with their metadata, or None."""
        name = _predictions_name(PREDICTIONS, round_number, model_name)
        with _azure_errors(self._container, name, "read", "predictions"):
            download = self._download_optional(name)
            return None if download is None else Archived(download.readall(), dict(download.properties.metadata or {}))

    def benchmark_history(self, model_name: str, round_number: int, rounds: int) -> list[float]:
        """The benchmark correlations archived with the model's predictions of the `rounds` rounds before this one.

        Newest first; rounds without archived predictions, or archived before the check
        existed, are left out.
        """
        found = []
        for earlier in range(round_number - 1, max(round_number - 1 - rounds, -1), -1):
            name = _predictions_name(PREDICTIONS, earlier, model_name)
            with _azure_errors(self._container, name, "read", "predictions"):
                try:
                    metadata = self._container.get_blob_client(name).get_blob_properties().metadata or {}
                except ResourceNotFoundError:
                    continue
            try:
                found.append(float(metadata["benchmark_corr"]))
            except (KeyError, ValueError):
                continue
        return found

    def run_lock(self, name: str, lease_seconds: int, wait_seconds: float = 0.0) -> RunLock:
        """A lock, held through a lease on the blob `locks/<name>`, for one run at a time."""
        blob = self._container.get_blob_client(f"locks/{_segment(name, 'lock name')}")
        return RunLock(blob, lease_seconds, wait_seconds)

    def read_predictions(self, round_number: int, model_name: str,
                         folder: str = PREDICTIONS) -> str | None:
        """Return a model's stored predictions for a round, or None if there are none."""
        return self._read_optional(_predictions_name(folder, round_number, model_name), "predictions")

    def record_submission(self, record: SubmissionRecord) -> None:
        """Add (or replace) the ledger entry for the record's round and model."""
        # One blob per (round, model) rather than one ledger file: concurrent runs for different
        # models never read-modify-write the same blob, so none can lose another's entry.
        name = _ledger_name(record.round_number, record.model_name)
        self._upload(name, record.to_json(), _JSON, "ledger entry")

    def submission_for(self, round_number: int, model_name: str) -> SubmissionRecord | None:
        """Return the recorded submission of a model for a round, or None."""
        name = _ledger_name(round_number, model_name)
        text = self._read_optional(name, "ledger entry")
        return None if text is None else self._parse_record(name, text)

    def record_intent(self, intent: SubmissionIntent) -> None:
        """Note that `intent.filename` is about to be submitted (replacing an older intent)."""
        self._upload(_intent_name(intent.round_number, intent.model_name), intent.to_json(), _JSON,
                     "submission intent")

    def intent_for(self, round_number: int, model_name: str) -> SubmissionIntent | None:
        """The intent a run left for a model and round, or None."""
        name = _intent_name(round_number, model_name)
        text = self._read_optional(name, "submission intent")
        if text is None:
            return None
        try:
            return SubmissionIntent.from_json(text)
        except (ValueError, TypeError) as exc:
            raise StorageError(f"submission intent '{name}' in container "
                               f"'{self._container.container_name}' is corrupt: {exc}") from exc

    def clear_intent(self, round_number: int, model_name: str) -> None:
        """Remove a model's intent once its outcome is known (recorded, or known not to exist)."""
        name = _intent_name(round_number, model_name)
        with _azure_errors(self._container, name, "delete", "submission intent"):
            try:
                self._container.delete_blob(name)
            except ResourceNotFoundError as exc:
                if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                    raise

    def ledger(self, round_number: int | None = None) -> list[SubmissionRecord]:
        """All recorded submissions, or one round's, sorted by round and model name."""
        # The trailing slash keeps round 1 from matching round-10, round-11, ...
        prefix = "ledger/" if round_number is None else f"ledger/round-{round_number:d}/"
        with _azure_errors(self._container, prefix, "list", "ledger"):
            names = [blob.name for blob in self._container.list_blobs(name_starts_with=prefix)]
        records = []
        for name in names:
            text = self._read_optional(name, "ledger entry")
            if text is not None:  # deleted since the listing
                records.append(self._parse_record(name, text))
        return sorted(records, key=lambda r: (r.round_number, r.model_name))

    def _upload(self, name: str, text: str, content: ContentSettings, what: str,
                metadata: dict[str, str] | None = None) -> None:
        with _azure_errors(self._container, name, "write", what):
            self._container.upload_blob(name, text, overwrite=True, content_settings=content,
                                        metadata=metadata)

    def _download_optional(self, name: str) -> StorageStreamDownloader[str] | None:
        """A text blob's download, or None if it does not exist (a missing container still raises)."""
        try:
            return self._container.download_blob(name, encoding="utf-8")
        except ResourceNotFoundError as exc:
            if exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise
            return None

    def _create(self, name: str, text: str, what: str) -> bool:
        """Write a JSON blob only if it does not exist yet; True if this call wrote it."""
        with _azure_errors(self._container, name, "write", what):
            try:
                self._container.upload_blob(name, text, overwrite=False, content_settings=_JSON)
            except ResourceExistsError:
                return False
        return True

    def _read_optional(self, name: str, what: str) -> str | None:
        with _azure_errors(self._container, name, "read", what):
            download = self._download_optional(name)
            return None if download is None else download.readall()

    def _parse_record(self, name: str, text: str) -> SubmissionRecord:
        try:
            return SubmissionRecord.from_json(text)
        except ValueError as exc:
            raise StorageError(
                f"ledger entry '{name}' in container '{self._container.container_name}' "
                f"is corrupt: {exc}"
            ) from exc


@contextmanager
def _azure_errors(
    container: ContainerClient, blob_name: str | None, action: str, what: str
) -> Iterator[None]:
    """Turn the SDK's errors into StorageError naming the container and blob, never a secret."""
    where = f"container '{container.container_name}'"
    try:
        yield
    except ResourceNotFoundError as exc:
        if blob_name is None or exc.error_code == StorageErrorCode.CONTAINER_NOT_FOUND:
            raise StorageError(f"{where} not found in the storage account") from exc
        raise StorageError(f"{what} '{blob_name}' not found in {where}") from exc
    except AzureError as exc:
        subject = where if blob_name is None else f"{what} '{blob_name}' ({where})"
        raise StorageError(f"could not {action} {subject}: {_reason(exc)}") from exc


def _reason(exc: AzureError) -> str:
    # The first line carries the cause; the rest is request ids and the raw XML body.
    lines = str(exc.message or type(exc).__name__).strip().splitlines()
    reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:_MAX_REASON_CHARS]
    if getattr(exc, "status_code", None) == 403:
        reason += " (check that the app's identity has a Storage Blob Data role on the account)"
    return reason


def _check_blob_name(name: str) -> None:
    if not name or name.startswith("/") or ".." in name:
        raise StorageError(f"refusing blob name {name!r}: it is empty, starts with '/' or has '..'")


def _segment(value: str, what: str) -> str:
    """A value that must form exactly one segment of a blob name."""
    if not value or "/" in value or ".." in value:
        raise StorageError(f"refusing {what} {value!r}: it is empty or has '/' or '..'")
    return value


def _predictions_name(folder: str, round_number: int, model_name: str) -> str:
    return f"{_segment(folder, 'folder')}/round-{round_number:d}/{_segment(model_name, 'model name')}.csv"


def _window_mark(round_number: int) -> str:
    return f"rounds/round-{round_number:d}/window-checked.json"


def _run_blob(run_id: str, name: str) -> str:
    return f"runs/{_segment(run_id, 'run id')}/{name}"


def _ledger_name(round_number: int, model_name: str) -> str:
    return f"ledger/round-{round_number:d}/{_segment(model_name, 'model name')}.json"


def _intent_name(round_number: int, model_name: str) -> str:
    return f"intents/round-{round_number:d}/{_segment(model_name, 'model name')}.json"


def safe_name(text: str) -> str:
    """`text` with anything but letters, digits, '.', '_' and '-' replaced: safe in a file or blob name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _cache_key(blob_name: str) -> str:
    # Readable, yet unique: "a/b.pkl" and "a_b.pkl" read alike, their hashes do not.
    digest = hashlib.sha256(blob_name.encode()).hexdigest()[:12]
    return f"{safe_name(blob_name)[:100]}-{digest}"


def _write_atomically(target: Path, write_into: Callable[[IO[bytes]], object]) -> None:
    """Write via a temporary file in the same folder, so `target` is never seen half-written."""
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as temp:
            write_into(temp)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _remove_other_versions(current: Path) -> None:
    # Safe while another thread still reads an old copy: on Linux an open file outlives unlink.
    for version in current.parent.iterdir():
        if version != current:
            shutil.rmtree(version, ignore_errors=True)
            log.info("removed outdated cached model version %s", version)
