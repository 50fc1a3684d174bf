"""The Numerai sandbox, driven by the real numerapi client (no mocks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numerapi
import pandas as pd
import pytest
import requests

from devkit.numerai_sandbox import AUTH_ERROR, NumeraiSandbox

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSION = "v5.3"
LIVE = f"{VERSION}/live.parquet"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A tiny dataset folder: live.parquet (id index, two int8 features) and features.json."""
    folder = tmp_path / "data"
    folder.mkdir()
    ids = pd.Index([f"n{i:015x}" for i in range(5)], name="id")
    live = pd.DataFrame({"feature_a": [0, 1, 2, 3, 4], "feature_b": [4, 3, 2, 1, 0]}, index=ids)
    live.astype("int8").to_parquet(folder / "live.parquet")
    features = {"feature_sets": {"small": ["feature_a", "feature_b"]}, "targets": ["target"]}
    (folder / "features.json").write_text(json.dumps(features))
    return folder


@pytest.fixture
def sandbox(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NumeraiSandbox]:
    """A running sandbox serving `data_dir`, with numerapi pointed at it."""
    with NumeraiSandbox() as running:
        running.add_dataset_dir(VERSION, data_dir)
        monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", running.url)
        yield running


@pytest.fixture
def napi(sandbox: NumeraiSandbox) -> numerapi.NumerAPI:
    """A numerapi client holding the sandbox's valid keys."""
    return numerapi.NumerAPI(*sandbox.credentials, show_progress_bars=False)


def presigned(sandbox: NumeraiSandbox, dataset: str) -> str:
    """A dataset's presigned URL, as the `dataset` query gives it."""
    query = "query($f: String!) { dataset(filename: $f) }"
    answer = requests.post(
        sandbox.url, json={"query": query, "variables": {"f": dataset}}, timeout=10
    )
    return answer.json()["data"]["dataset"]


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make numerapi's 5xx retries instant; returns the delays it asked for."""
    sleeps: list[float] = []
    monkeypatch.setattr(numerapi.utils, "time", SimpleNamespace(sleep=sleeps.append))
    return sleeps


def _write_predictions(path: Path) -> bytes:
    content = b"id,prediction\nn000000000000000,0.25\nn000000000000001,0.75\n"
    path.write_bytes(content)
    return content


def _post(
    sandbox: NumeraiSandbox, query: str, timeout: float = 10, **headers: str
) -> requests.Response:
    return requests.post(
        sandbox.url, json={"query": query, "variables": None}, headers=headers, timeout=timeout
    )


def test_listens_on_loopback_only(sandbox: NumeraiSandbox) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:")


def test_current_round_open_then_closed_then_reopened(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI
) -> None:
    number = sandbox.round.number
    assert napi.get_current_round() == number
    assert napi.check_round_open() is True

    sandbox.close_round()
    assert napi.check_round_open() is False
    assert napi.get_current_round() == number

    sandbox.open_new_round()
    assert napi.get_current_round() == number + 1
    assert napi.check_round_open() is True


def test_list_rounds_fits_the_schema(sandbox: NumeraiSandbox, napi: numerapi.NumerAPI) -> None:
    rounds = napi.list_rounds(status="open")
    assert [r["number"] for r in rounds] == [sandbox.round.number]
    sandbox.close_round()
    assert napi.list_rounds(status="open") == []


def test_injected_between_rounds_error_reads_as_closed(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI
) -> None:
    sandbox.faults.graphql_error = "Current round not open for submissions"
    assert napi.check_round_open() is False
    assert napi.check_round_open() is True  # the injected error is one-shot


def test_list_datasets(napi: numerapi.NumerAPI) -> None:
    assert napi.list_datasets() == [f"{VERSION}/features.json", LIVE]


def test_download_dataset_writes_exact_bytes(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, data_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "download" / "live.parquet"
    napi.download_dataset(LIVE, str(dest))
    assert dest.read_bytes() == (data_dir / "live.parquet").read_bytes()
    assert f"GET /files/{LIVE}" in sandbox.requests_log


def test_download_unknown_dataset_names_it(napi: numerapi.NumerAPI, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="v5.3/train.parquet"):
        napi.download_dataset("v5.3/train.parquet", str(tmp_path / "train.parquet"))


def test_download_failure_status(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, tmp_path: Path
) -> None:
    sandbox.faults.download_status = 500
    with pytest.raises(requests.HTTPError):
        napi.download_dataset(LIVE, str(tmp_path / "live.parquet"))


def test_truncated_download_fails_then_resumes(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, data_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "live.parquet"
    sandbox.faults.truncate_download = True
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        napi.download_dataset(LIVE, str(dest))
    assert not dest.exists()

    sandbox.faults.reset()
    # numerapi resumes from its .temp file with a Range request.
    napi.download_dataset(LIVE, str(dest))
    assert dest.read_bytes() == (data_dir / "live.parquet").read_bytes()


def test_get_models_with_valid_keys(sandbox: NumeraiSandbox, napi: numerapi.NumerAPI) -> None:
    assert napi.get_models() == sandbox.models


def test_bad_keys_raise_value_error(sandbox: NumeraiSandbox) -> None:
    wrong = numerapi.NumerAPI(sandbox.public_id, "not-the-secret", show_progress_bars=False)
    with pytest.raises(ValueError, match=AUTH_ERROR):
        wrong.get_models()


def test_missing_auth_header_is_a_graphql_error(sandbox: NumeraiSandbox) -> None:
    response = _post(sandbox, "query { account { models { id } } }")
    assert response.status_code == 200
    assert response.json()["errors"][0]["message"] == AUTH_ERROR


def test_upload_predictions_end_to_end(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, tmp_path: Path
) -> None:
    csv = _write_predictions(tmp_path / "predictions.csv")
    model_id = napi.get_models()["sandbox_model"]

    submission_id = napi.upload_predictions(str(tmp_path / "predictions.csv"), model_id=model_id)

    [submission] = sandbox.submissions
    assert submission.id == submission_id
    assert submission.csv == csv
    assert (submission.model_id, submission.model_name) == (model_id, "sandbox_model")
    assert submission.round == sandbox.round.number
    assert re.fullmatch(r"predictions-[A-Za-z]{10}\.csv", submission.filename)  # Numerai's shape
    listed = napi.submission_ids(model_id)
    assert [(s["id"], s["filename"]) for s in listed] == [(submission_id, submission.filename)]


def test_a_lagging_list_shows_a_submission_only_after_the_lag(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, tmp_path: Path
) -> None:
    _write_predictions(tmp_path / "predictions.csv")
    model_id = napi.get_models()["sandbox_model"]
    sandbox.faults.list_lag_seconds = 3600
    submission_id = napi.upload_predictions(str(tmp_path / "predictions.csv"), model_id=model_id)
    assert [s.id for s in sandbox.submissions] == [submission_id]  # made at once
    assert napi.submission_ids(model_id) == []  # listed later
    sandbox.faults.list_lag_seconds = 0  # the lag is over
    assert [s["id"] for s in napi.submission_ids(model_id)] == [submission_id]


def test_failed_put_means_no_submission(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, tmp_path: Path
) -> None:
    _write_predictions(tmp_path / "predictions.csv")
    sandbox.faults.put_status = 500
    with pytest.raises(ValueError, match="Could not find the uploaded file"):
        napi.upload_predictions(
            str(tmp_path / "predictions.csv"), model_id=sandbox.models["sandbox_model"]
        )
    assert sandbox.submissions == []


def test_unknown_model_id_is_refused(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, tmp_path: Path
) -> None:
    _write_predictions(tmp_path / "predictions.csv")
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ValueError, match=f"Model {unknown} does not exist"):
        napi.upload_predictions(str(tmp_path / "predictions.csv"), model_id=unknown)
    assert sandbox.submissions == []


def test_create_submission_error_fault(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, tmp_path: Path
) -> None:
    _write_predictions(tmp_path / "predictions.csv")
    sandbox.faults.create_submission_error = "Internal server error"
    with pytest.raises(ValueError, match="Internal server error"):
        napi.upload_predictions(
            str(tmp_path / "predictions.csv"), model_id=sandbox.models["sandbox_model"]
        )
    assert sandbox.submissions == []


def test_5xx_then_recovery(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, retry_sleeps: list[float]
) -> None:
    sandbox.faults.api_5xx = 2
    assert napi.get_current_round() == sandbox.round.number
    assert retry_sleeps == [5, 10]
    assert sandbox.requests_log.count("graphql rounds") == 3


def test_5xx_forever_ends_in_numerapis_key_error(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI, retry_sleeps: list[float]
) -> None:
    sandbox.faults.api_5xx_forever = True
    # numerapi logs the last 5xx, returns {} and then indexes ["data"].
    with pytest.raises(KeyError, match="data"):
        napi.get_current_round()


def test_query_outside_the_schema_gives_errors(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI
) -> None:
    query = "query { rounds(tournament: 8, number: 0) { number bogusField } }"
    with pytest.raises(ValueError, match="bogusField"):
        napi.raw_query(query)
    response = _post(sandbox, query)
    assert response.status_code == 200
    payload = response.json()
    assert payload["data"] is None
    assert "bogusField" in payload["errors"][0]["message"]


def test_delay_fault(sandbox: NumeraiSandbox, napi: numerapi.NumerAPI) -> None:
    sandbox.faults.delay_seconds = 0.3
    started = time.monotonic()
    napi.get_current_round()
    assert time.monotonic() - started >= 0.3


def test_trickled_answers_keep_every_read_short_but_take_long(
    sandbox: NumeraiSandbox, data_dir: Path
) -> None:
    sandbox.faults.trickle_graphql_seconds = 1.0
    sandbox.faults.trickle_download_seconds = 1.0
    started = time.monotonic()
    # A read timeout of half a second is never reached: a piece comes every tenth.
    answer = _post(sandbox, "query { rounds(tournament: 8, number: 0) { number } }", timeout=0.5)
    assert answer.json()["data"]["rounds"] == [{"number": sandbox.round.number}]
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    download = requests.get(presigned(sandbox, LIVE), timeout=0.5)
    assert download.content == (data_dir / "live.parquet").read_bytes()
    assert time.monotonic() - started >= 1.0


def test_ignore_range_sends_the_whole_file(sandbox: NumeraiSandbox, data_dir: Path) -> None:
    url = presigned(sandbox, LIVE)
    assert requests.get(url, headers={"Range": "bytes=10-"}, timeout=10).status_code == 206
    sandbox.faults.ignore_range = True
    answer = requests.get(url, headers={"Range": "bytes=10-"}, timeout=10)
    assert answer.status_code == 200 and "Content-Range" not in answer.headers
    assert answer.content == (data_dir / "live.parquet").read_bytes()


def test_padded_answers_with_and_without_their_length(sandbox: NumeraiSandbox) -> None:
    query = "query { rounds(tournament: 8, number: 0) { number } }"
    sandbox.faults.pad_graphql_bytes = 100_000
    padded = _post(sandbox, query)
    assert padded.headers["Content-Length"] == "100000" and len(padded.content) == 100_000
    assert padded.json()["data"]["rounds"] == [{"number": sandbox.round.number}]
    sandbox.faults.graphql_without_length = True
    unannounced = _post(sandbox, query)
    assert "Content-Length" not in unannounced.headers and len(unannounced.content) == 100_000
    assert unannounced.json()["data"]["rounds"] == [{"number": sandbox.round.number}]


def test_nothing_downloaded_is_visible_in_the_log(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI
) -> None:
    napi.list_datasets()
    assert sandbox.requests_log == ["graphql listDatasets"]


def test_command_line_prints_a_working_url(data_dir: Path) -> None:
    command = [sys.executable, "-m", "devkit.numerai_sandbox", "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = requests.post(url, json={"query": "{ listDatasets }"}, timeout=10)
        assert response.json() == {"data": {"listDatasets": [f"{VERSION}/features.json", LIVE]}}
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- Numerai's own refusal texts (issue #19, point 5) --------------------------------

# Numerai's texts for keys it refuses, as numerapi's tests/test_numerapi.py expects them
# (test_unauthorized_requests) and numerapi issue 7 reported them.
NUMERAI_AUTH_TEXTS = [
    "Your session is invalid or has expired.",
    "API keys required for this action.",
]


def test_bad_keys_get_numerais_own_text(sandbox: NumeraiSandbox) -> None:
    wrong = numerapi.NumerAPI(sandbox.public_id, "not-the-secret", show_progress_bars=False)
    with pytest.raises(ValueError, match=r"^Your session is invalid or has expired\.$"):
        wrong.get_models()


@pytest.mark.parametrize("text", NUMERAI_AUTH_TEXTS)
def test_the_client_names_the_key_settings_for_numerais_auth_texts(
    sandbox: NumeraiSandbox,
    text: str,
) -> None:
    from shared.errors import NumeraiApiError
    from shared.numerai_client import NumeraiClient
    from shared.settings import Settings

    client = NumeraiClient(Settings(*sandbox.credentials, numerai_api_url=sandbox.url))
    sandbox.faults.graphql_error = text
    with pytest.raises(NumeraiApiError) as refused:
        client.model_ids()
    assert str(refused.value).startswith(
        "Numerai refused the API keys (NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY)"
    )
    assert text in str(refused.value)
    # numerapi#7: the same text answers swapped keys, or a username given as the public id.
    assert "NUMERAI_PUBLIC_ID holds the key's public id (not the username)" in str(refused.value)


# --- Held to Numerai's public sources (issue #19) --------------------------------------

# numerai-cli's `node test` query, word for word (numerai/cli/node/test.py).
CLI_SUBMISSIONS_QUERY = """query ( $modelId: String! ) {
            submissions( modelId: $modelId ){
                round{ number, tournament },
                triggerId
                insertedAt
            }
        }"""
# numerai-cli's `node test` mutation, word for word.
CLI_TRIGGER_MUTATION = """mutation ( $modelId: String! ) {
                    triggerModelWebhook( modelId: $modelId )
                }"""


class _Receiver(BaseHTTPRequestHandler):
    """A participant's webhook: keeps each call's path and body, answers `status`."""

    calls: ClassVar[list[tuple[str, dict]]] = []
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).calls.append((self.path, body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"calls": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()
    thread.join()


def _two_models(sandbox: NumeraiSandbox) -> tuple[str, str]:
    sandbox.models.update(
        {
            "one": "00000000-0000-4000-8000-000000000001",
            "two": "00000000-0000-4000-8000-000000000002",
        }
    )
    return sandbox.models["one"], sandbox.models["two"]


def test_submissions_carry_their_round_and_trigger_id_as_numerai_cli_queries_them(
    sandbox: NumeraiSandbox,
    napi: numerapi.NumerAPI,
    tmp_path: Path,
) -> None:
    model_id = napi.get_models()["sandbox_model"]
    _write_predictions(tmp_path / "predictions.csv")
    napi.upload_predictions(str(tmp_path / "predictions.csv"), model_id=model_id)
    answer = napi.raw_query(CLI_SUBMISSIONS_QUERY, {"modelId": model_id}, authorization=True)
    [listed] = answer["data"]["submissions"]
    assert listed["round"] == {"number": sandbox.round.number, "tournament": 8}
    assert (
        listed["triggerId"] is None
    )  # numerapi passes TRIGGER_ID from the environment; none was set


def test_numerapis_get_submission_filenames_works(
    sandbox: NumeraiSandbox,
    napi: numerapi.NumerAPI,
    tmp_path: Path,
) -> None:
    model_id = napi.get_models()["sandbox_model"]
    _write_predictions(tmp_path / "predictions.csv")
    napi.upload_predictions(str(tmp_path / "predictions.csv"), model_id=model_id)
    [listed] = napi.get_submission_filenames(model_id=model_id)
    assert listed == {
        "filename": sandbox.submissions[0].filename,
        "round_num": sandbox.round.number,
        "tournament": 8,
    }


def test_a_late_submission_is_queued_into_the_next_round(
    sandbox: NumeraiSandbox,
    napi: numerapi.NumerAPI,
    tmp_path: Path,
) -> None:
    late_round = sandbox.round.number
    sandbox.close_round()
    _write_predictions(tmp_path / "predictions.csv")
    napi.upload_predictions(
        str(tmp_path / "predictions.csv"), model_id=napi.get_models()["sandbox_model"]
    )
    [submission] = sandbox.submissions
    assert submission.round == late_round + 1
    opened = sandbox.open_new_round()
    assert submission.inserted_at < opened.open_time  # why insertedAt cannot tell the round


def test_close_time_is_later_than_close_staking_time(napi: numerapi.NumerAPI) -> None:
    answer = napi.raw_query(
        "query { rounds(tournament: 8, number: 0) { closeTime closeStakingTime } }"
    )
    [round_] = answer["data"]["rounds"]
    assert round_["closeTime"] > round_["closeStakingTime"]


def test_presigned_urls_expire_with_s3s_answer(
    sandbox: NumeraiSandbox, napi: numerapi.NumerAPI
) -> None:
    sandbox.presigned_url_seconds = 0.2
    url = presigned(sandbox, LIVE)
    auth = napi.raw_query(
        'query($m: String) { submission_upload_auth(filename: "p.csv", tournament: 8, modelId: $m) '
        "{ url } }",
        {"m": napi.get_models()["sandbox_model"]},
        authorization=True,
    )["data"]["submission_upload_auth"]
    assert requests.get(url, timeout=10).status_code == 200
    time.sleep(0.3)
    put = requests.put(auth["url"], data=b"id,prediction\n", timeout=10)
    for answer in (requests.get(url, timeout=10), put):
        assert answer.status_code == 403
        assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in answer.content


def test_a_round_opening_calls_each_models_webhook_with_its_own_trigger_id(
    sandbox: NumeraiSandbox,
    napi: numerapi.NumerAPI,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    one, two = _two_models(sandbox)
    for model_id in (one, two):  # one URL for both: still one call per model
        assert napi.set_submission_webhook(model_id, url)
    opened = sandbox.open_new_round()
    calls = sandbox.wait_for_webhooks()
    assert sorted(c.model_id for c in calls) == sorted([one, two])
    assert len({c.trigger_id for c in calls}) == 2 and all(c.succeeded for c in calls)
    bodies = sorted((body for _, body in handler.calls), key=lambda b: b["triggerId"])
    assert bodies == sorted(
        (
            {
                "roundNumber": opened.number,
                "triggerId": c.trigger_id,
                "dataVersion": 5,
                "isTest": False,
            }
            for c in calls
        ),
        key=lambda b: b["triggerId"],
    )


def test_only_a_200_is_a_successful_webhook_call(
    sandbox: NumeraiSandbox,
    napi: numerapi.NumerAPI,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    handler.status = 202
    assert napi.set_submission_webhook(napi.get_models()["sandbox_model"], url)
    sandbox.open_new_round()
    [call] = sandbox.wait_for_webhooks()
    assert call.status == 202 and not call.succeeded


def test_numerai_clis_trigger_model_webhook_calls_that_models_webhook_and_answers_its_trigger_id(
    sandbox: NumeraiSandbox,
    napi: numerapi.NumerAPI,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    one, two = _two_models(sandbox)
    assert napi.set_submission_webhook(one, f"{url}?model=one")
    assert napi.set_submission_webhook(two, f"{url}?model=two")
    answer = napi.raw_query(CLI_TRIGGER_MUTATION, {"modelId": two}, authorization=True)
    trigger_id = answer["data"]["triggerModelWebhook"]
    [call] = sandbox.wait_for_webhooks()
    assert (call.model_id, call.trigger_id, call.url) == (two, trigger_id, f"{url}?model=two")
    [(path, body)] = handler.calls
    assert path == "/hook?model=two" and body["triggerId"] == trigger_id and body["isTest"] is True
