"""Blob Storage access, exercised with the real SDK against a real Azurite (no mocks)."""

from __future__ import annotations

import itertools
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

import devkit.azurite as azurite_module
from devkit.azurite import ACCOUNT_KEY, Azurite, AzuriteError, free_port
from shared.errors import StorageError
from shared.storage import Results
from shared.storage.client import (
    ACCOUNT_URL_SETTING,
    CONNECTION_STRING_SETTING,
    blob_service_client,
)
from shared.storage.ledger import SubmissionRecord
from shared.storage.models import ModelStore

TIMEOUT_SECONDS = 5.0


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as running:
        yield running


@pytest.fixture(scope="module")
def service(azurite: Azurite) -> BlobServiceClient:
    return blob_service_client(
        connection_string=azurite.connection_string,
        account_url=None,
        managed_identity_client_id=None,
        timeout_seconds=TIMEOUT_SECONDS,
    )


@pytest.fixture
def models(service: BlobServiceClient) -> ContainerClient:
    """A fresh, empty models container for each test."""
    return service.create_container(f"models-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def model_store(service: BlobServiceClient, models: ContainerClient, tmp_path: Path) -> ModelStore:
    return ModelStore(service, models.container_name, tmp_path / "cache")


@pytest.fixture
def results_container(service: BlobServiceClient) -> ContainerClient:
    """A client for a results container that does not exist yet; Results creates it."""
    return service.get_container_client(f"results-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def results(service: BlobServiceClient, results_container: ContainerClient) -> Results:
    return Results.open(service, results_container.container_name)


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the blobs downloaded during the test (a spy; the real download still runs)."""
    calls: list[str] = []
    real_download = BlobClient.download_blob

    def counting_download(self: BlobClient, *args: object, **kwargs: object) -> object:
        calls.append(self.blob_name)
        return real_download(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "download_blob", counting_download)
    return calls


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _record(round_number: int, model_name: str) -> SubmissionRecord:
    return SubmissionRecord(
        round_number=round_number,
        model_name=model_name,
        model_id=f"id-{model_name}",
        submission_id=f"sub-{round_number}-{model_name}",
        submitted_at="2026-11-26T13:00:00+00:00",
    )


# --- Azurite -------------------------------------------------------------------------------


def test_azurite_listens_while_running_and_is_gone_after_stop() -> None:
    emulator = Azurite().start()
    port, pid = emulator.port, emulator.pid
    queue_port, queue_pid = emulator.queue_port, emulator.queue_pid
    assert pid is not None and queue_pid is not None
    assert emulator.blob_endpoint == f"http://127.0.0.1:{port}/devstoreaccount1"
    assert emulator.queue_endpoint == f"http://127.0.0.1:{queue_port}/devstoreaccount1"
    assert f"BlobEndpoint={emulator.blob_endpoint};" in emulator.connection_string
    assert f"QueueEndpoint={emulator.queue_endpoint};" in emulator.connection_string
    assert _accepts_connections(port) and _accepts_connections(queue_port)

    emulator.stop()

    assert not _accepts_connections(port) and not _accepts_connections(queue_port)
    assert not Path(f"/proc/{pid}").exists() and not Path(f"/proc/{queue_pid}").exists()
    with pytest.raises(AzuriteError, match="not running"):
        _ = emulator.port


def test_azurite_retries_once_when_its_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        # The squatted port first, then real free ports (for the retry and the queue service).
        ports = itertools.chain([squatter.getsockname()[1]], iter(free_port, None))
        monkeypatch.setattr(azurite_module, "free_port", lambda: next(ports))
        with Azurite() as emulator:
            service = BlobServiceClient.from_connection_string(emulator.connection_string)
            assert emulator.port != squatter.getsockname()[1]
            assert service.create_container("proof").exists()


def test_azurite_without_node_modules_says_to_run_make_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(azurite_module, "AZURITE_BLOB", tmp_path / "azurite-blob")
    with pytest.raises(AzuriteError, match="make setup"):
        Azurite().start()


# --- ModelStore ----------------------------------------------------------------------------


def test_fetch_downloads_once_and_reuses_the_cache_while_the_etag_is_unchanged(
    model_store: ModelStore, models: ContainerClient, downloads: list[str]
) -> None:
    blob = models.upload_blob("team/model.pkl", b"weights v1")
    etag = blob.get_blob_properties().etag.strip('"')

    first = model_store.fetch("team/model.pkl")
    before = first.stat()
    second = model_store.fetch("team/model.pkl")
    after = second.stat()

    assert first.read_bytes() == b"weights v1"
    assert (first.name, first.parent.name) == ("model.pkl", etag)
    assert second == first
    assert downloads == ["team/model.pkl"]
    # A download would os.replace a new file in: a new inode and mtime.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_fetch_downloads_a_changed_blob_and_removes_the_old_version(
    model_store: ModelStore, models: ContainerClient, downloads: list[str]
) -> None:
    models.upload_blob("model.pkl", b"weights v1")
    old = model_store.fetch("model.pkl")
    models.upload_blob("model.pkl", b"weights v2", overwrite=True)

    new = model_store.fetch("model.pkl")

    assert new.read_bytes() == b"weights v2"
    assert new.parent != old.parent
    assert not old.parent.exists()
    assert list(new.parent.parent.iterdir()) == [new.parent]
    assert [p.name for p in new.parent.iterdir()] == ["model.pkl"]  # no temporary file left
    assert downloads == ["model.pkl", "model.pkl"]


def test_fetch_of_a_blob_replaced_between_head_and_get_saves_the_new_version(
    model_store: ModelStore, models: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    models.upload_blob("model.pkl", b"weights v1")
    real_properties = BlobClient.get_blob_properties
    replaced: list[bool] = []

    def properties_then_replace(self: BlobClient, *args: object, **kwargs: object) -> object:
        properties = real_properties(self, *args, **kwargs)
        if not replaced:  # someone uploads a new model right after our first HEAD
            replaced.append(True)
            models.upload_blob("model.pkl", b"weights v2", overwrite=True)
        return properties

    monkeypatch.setattr(BlobClient, "get_blob_properties", properties_then_replace)

    path = model_store.fetch("model.pkl")

    current_etag = models.get_blob_client("model.pkl").get_blob_properties().etag.strip('"')
    assert path.read_bytes() == b"weights v2"
    assert path.parent.name == current_etag


def test_fetch_of_a_missing_blob_names_it_and_the_container(
    model_store: ModelStore, models: ContainerClient
) -> None:
    with pytest.raises(StorageError) as caught:
        model_store.fetch("nope.pkl")
    assert str(caught.value) == (
        f"model file 'nope.pkl' not found in container '{models.container_name}'"
    )


def test_missing_container_is_named(service: BlobServiceClient, tmp_path: Path) -> None:
    store = ModelStore(service, "absent-models", tmp_path)
    for read in (store.fetch, store.read_text):
        with pytest.raises(StorageError, match="container 'absent-models' not found"):
            read("manifest.json")


def test_read_text_returns_the_text_without_a_byte_order_mark(
    model_store: ModelStore, models: ContainerClient
) -> None:
    models.upload_blob("manifest.json", '\ufeff{"name": "modèle"}'.encode())
    assert model_store.read_text("manifest.json") == '{"name": "modèle"}'


def test_read_text_of_a_missing_blob_names_it_and_the_container(
    model_store: ModelStore, models: ContainerClient
) -> None:
    with pytest.raises(StorageError) as caught:
        model_store.read_text("manifest.json")
    assert "'manifest.json'" in str(caught.value)
    assert f"'{models.container_name}'" in str(caught.value)


def test_read_text_refuses_a_blob_over_its_limit_by_its_size_without_downloading_it(
    model_store: ModelStore, models: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    models.upload_blob("manifest.json", b"x" * 2001)
    caplog.set_level(logging.INFO, logger="azure")  # the SDK logs each request's method
    with pytest.raises(
        StorageError,
        match=f"blob 'manifest.json' in container '{models.container_name}' "
        "is 2001 bytes; at most 2000 are read",
    ):
        model_store.read_text("manifest.json", max_bytes=2000)
    methods = [r.getMessage() for r in caplog.records if "Request method" in r.getMessage()]
    assert methods and not any("'GET'" in method for method in methods)
    assert model_store.read_text("manifest.json", max_bytes=2001) == "x" * 2001


@pytest.mark.parametrize("name", ["../secrets.pkl", "a/../b.pkl", "/etc/model.pkl", ""])
def test_unsafe_blob_names_are_refused(model_store: ModelStore, name: str) -> None:
    with pytest.raises(StorageError, match="refusing blob name"):
        model_store.fetch(name)


# --- Results --------------------------------------------------------------------------


def test_results_store_creates_its_container_and_tolerates_an_existing_one(
    service: BlobServiceClient, results_container: ContainerClient
) -> None:
    assert not results_container.exists()
    Results.open(service, results_container.container_name)
    Results.open(service, results_container.container_name)
    assert results_container.exists()


def test_report_round_trip(results: Results, results_container: ContainerClient) -> None:
    blob_name = results.runs.write_report("2026-11-26T13-00-00Z-abc", '{"ok": true}')

    assert blob_name == "reports/2026-11-26T13-00-00Z-abc.json"
    assert results.runs.read_report("2026-11-26T13-00-00Z-abc") == '{"ok": true}'
    assert _content_type(results_container, blob_name) == "application/json"
    with pytest.raises(StorageError, match="report 'reports/other.json' not found"):
        results.runs.read_report("other")


def test_predictions_round_trip_and_overwrite(
    results: Results, results_container: ContainerClient
) -> None:
    assert results.archive.read(812, "alpha") is None

    blob_name = results.archive.write(812, "alpha", "id,prediction\na,0.1\n")
    results.archive.write(812, "alpha", "id,prediction\na,0.2\n")

    assert blob_name == "predictions/round-812/alpha.csv"
    assert results.archive.read(812, "alpha") == "id,prediction\na,0.2\n"
    assert _content_type(results_container, blob_name) == "text/csv"


def test_ledger_round_trip_and_listing_by_round(results: Results) -> None:
    for round_number, model in [(1, "beta"), (1, "alpha"), (10, "alpha"), (2, "alpha")]:
        results.ledger.record(_record(round_number, model))

    assert results.ledger.submission_for(1, "alpha") == _record(1, "alpha")
    assert results.ledger.submission_for(3, "alpha") is None
    assert results.ledger.records(1) == [_record(1, "alpha"), _record(1, "beta")]  # not round 10
    assert [(r.round_number, r.model_name) for r in results.ledger.records()] == [
        (1, "alpha"), (1, "beta"), (2, "alpha"), (10, "alpha"),
    ]  # fmt: skip


def test_a_corrupt_ledger_entry_is_named(
    results: Results, results_container: ContainerClient
) -> None:
    results_container.upload_blob("ledger/round-5/alpha.json", '{"round_number": 5}')
    with pytest.raises(StorageError, match="ledger entry 'ledger/round-5/alpha.json'.*lacks"):
        results.ledger.submission_for(5, "alpha")


@pytest.mark.parametrize("model_name", ["../alpha", "a/b", ""])
def test_unsafe_model_names_are_refused(results: Results, model_name: str) -> None:
    with pytest.raises(StorageError, match="refusing model name"):
        results.archive.write(1, model_name, "id,prediction\n")


def test_submission_record_json_round_trip_and_validation() -> None:
    record = _record(812, "alpha")
    assert SubmissionRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="UTC"):
        SubmissionRecord(812, "alpha", "id", "sub", "2026-11-26T13:00:00+01:00")
    with pytest.raises(ValueError, match="lacks model_id"):
        SubmissionRecord.from_json(
            '{"round_number": 1, "model_name": "a", '
            '"submission_id": "s", "submitted_at": "2026-11-26T13:00:00Z"}'
        )


# --- blob_service_client -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection_string", "account_url", "state"),
    [
        (None, None, "neither is set"),
        ("", "", "neither is set"),
        ("UseDevelopmentStorage=true", "https://acct.blob.core.windows.net", "both are set"),
    ],
)
def test_exactly_one_storage_setting_is_required(
    connection_string: str | None, account_url: str | None, state: str
) -> None:
    with pytest.raises(StorageError) as caught:
        blob_service_client(
            connection_string=connection_string,
            account_url=account_url,
            managed_identity_client_id=None,
            timeout_seconds=TIMEOUT_SECONDS,
        )
    message = str(caught.value)
    assert CONNECTION_STRING_SETTING in message and ACCOUNT_URL_SETTING in message
    assert state in message


def test_a_malformed_connection_string_is_not_echoed() -> None:
    secret = "AccountKey=c2VjcmV0"
    with pytest.raises(StorageError, match=CONNECTION_STRING_SETTING) as caught:
        blob_service_client(
            connection_string=f"garbage {secret}",
            account_url=None,
            managed_identity_client_id=None,
            timeout_seconds=TIMEOUT_SECONDS,
        )
    assert secret not in str(caught.value)


def test_an_account_url_uses_the_managed_identity() -> None:
    from azure.identity import DefaultAzureCredential

    service = blob_service_client(
        connection_string=None,
        account_url="https://acct.blob.core.windows.net",
        managed_identity_client_id="00000000-0000-0000-0000-000000000001",
        timeout_seconds=TIMEOUT_SECONDS,
    )
    assert service.account_name == "acct"
    assert isinstance(service.credential, DefaultAzureCredential)


def test_an_http_account_url_is_refused_because_tokens_need_https() -> None:
    with pytest.raises(StorageError, match="https://"):
        blob_service_client(
            connection_string=None,
            account_url="http://acct.blob.core.windows.net",
            managed_identity_client_id=None,
            timeout_seconds=TIMEOUT_SECONDS,
        )


def test_an_unreachable_endpoint_fails_fast_without_leaking_the_key(tmp_path: Path) -> None:
    closed = free_port()
    service = blob_service_client(
        connection_string=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;"
        ),
        account_url=None,
        managed_identity_client_id=None,
        timeout_seconds=1.0,
    )
    store = ModelStore(service, "models", tmp_path)

    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.read_text("manifest.json")
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert elapsed < 8, f"took {elapsed:.1f} s"
    assert "'manifest.json'" in message and "'models'" in message
    assert ACCOUNT_KEY not in message and "AccountKey" not in message


def _content_type(container: ContainerClient, blob_name: str) -> str:
    return container.get_blob_client(blob_name).get_blob_properties().content_settings.content_type


def test_a_refused_local_endpoint_says_to_start_azurite(tmp_path: Path) -> None:
    service = blob_service_client(
        connection_string=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
        ),
        account_url=None,
        managed_identity_client_id=None,
        timeout_seconds=1.0,
    )
    with pytest.raises(StorageError) as caught:
        ModelStore(service, "models", tmp_path).read_text("models.json")
    message = str(caught.value)
    assert "Connection refused" in message
    assert "127.0.0.1" in message and "make local-stack" in message and "npx azurite" in message
