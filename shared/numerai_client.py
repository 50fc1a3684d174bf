"""The Numerai API, through numerapi, made dependable for an unattended job.

numerapi sends every GraphQL request through `Api.raw_query`, which sets no
timeout, retries only 5xx, and turns other failures into `{}` (the caller then
dies with `KeyError: 'data'`). `_DependableNumerAPI` overrides that one method:
numerapi keeps writing the queries, and each one now has a deadline for its
whole answer and a size limit, retries with backoff on connection errors,
timeouts and 5xx, and raises our own errors in words a user understands.
GraphQL errors (bad keys, unknown model) are not retried: asking again cannot
fix them.

requests' timeout bounds each socket read, not an answer: a server that sends a
byte at a time holds a run for as long as it likes. So answers are streamed and
cut off when their deadline passes.

numerapi's `download_dataset` retries nothing in time (600 s per read, for as
long as bytes come), appends a resumed download to its partial file even when
the server sent the whole file again, and checks nothing. `NumeraiClient.download`
asks for the URL with numerapi's query and fetches the file itself.

numerapi also never checks the status of the presigned PUT that carries the
predictions, and retries `create_submission` like any query, although asking
twice submits twice. So `upload` does the upload itself, `create_submission`
asks exactly once, and `find_submission` tells whether Numerai has an upload
(shared/steps/exactly_once.py puts the three together, exactly once).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numerapi
import numerapi.base_api
import requests
import urllib3

from shared.errors import (
    DataError,
    DataVersionUnavailable,
    NumeraiApiError,
    NumeraiKeysRefused,
    NumeraiUnanswered,
    UploadError,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Words Numerai uses when it refuses the keys; matched loosely on purpose. Its own texts, as numerapi's
# tests (tests/test_numerapi.py) and issues (numerapi#7) show them: "Your session is invalid or has
# expired." for a wrong or revoked key, "API keys required for this action" for none.
_AUTH_WORDS = (
    "authenticat",
    "api key",
    "api_key",
    "token",
    "permission",
    "unauthori",
    "session is invalid",
    "has expired",
)
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# The Authorization header's value, "Token <public id>$<secret key>", as written or
# URL-encoded: an API error has echoed it. Cut out of every message, whatever the
# redaction of logs and reports knows.
_ECHOED_TOKEN = re.compile(
    r"(Token(?:\s+|%20|\+))[^\s\"',;()]*(?:\$|%24)[^\s\"',;()]*", re.IGNORECASE
)
# A presigned URL's query (X-Amz-Signature, X-Amz-Security-Token) is a credential for the file.
_URL_QUERY = re.compile(r"(https?://[^\s?#]+)\?[^\s#]*")
# The largest answer the API may send. Real answers are kilobytes (a model's whole
# round history, the largest numerapi asks for, stays well under a megabyte); this is
# far above them yet refuses a runaway answer before it costs memory: the answer is
# held whole to parse it, and a 400 MB answer once took 1.4 GB.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
_READ_BYTES = 64 * 1024

# The query numerapi's download_dataset sends for a file's URL (numerapi 3.1.1).
_DATASET_QUERY = """
    query ($filename: String! $round: Int $tournament: Int) {
      dataset(filename: $filename round: $round tournament: $tournament)
    }
"""

# numerapi's list_datasets query: every file of the round, as "<data version>/<file>".
_LIST_DATASETS_QUERY = """
    query ($round: Int $tournament: Int) {
      listDatasets(round: $round tournament: $tournament)
    }
"""
_VERSION_PREFIX = re.compile(r"^(v\d+(?:\.\d+)*)/")

# The scopes of the account's API keys (numerapi's get_account asks for them with more).
_KEY_SCOPES_QUERY = """
    query { account { apiTokens { public_id scopes } } }
"""
_ROUND_QUERY = """
    query($tournament: Int!) {
      rounds(tournament: $tournament number: 0) { number openTime closeStakingTime }
    }
"""
_UPLOAD_AUTH_QUERY = """
    query($filename: String! $tournament: Int! $modelId: String) {
      submission_upload_auth(filename: $filename tournament: $tournament modelId: $modelId) {
        filename url
      }
    }
"""
_CREATE_SUBMISSION = """
    mutation($filename: String! $tournament: Int! $modelId: String $triggerId: String
             $dataDatestamp: Int) {
      create_submission(filename: $filename tournament: $tournament modelId: $modelId
                        triggerId: $triggerId source: "numerapi"
                        dataDatestamp: $dataDatestamp) { id }
    }
"""
# A model's submissions with the round each counts for, as numerai-cli's `node test` asks for them
# (numerai/cli/node/test.py): numerapi's submission_ids selects neither `round` nor `triggerId`.
_ROUND_SUBMISSIONS_QUERY = """
    query($modelId: String!) {
      submissions(modelId: $modelId) { id filename insertedAt triggerId round { number tournament } }
    }
"""
# numerapi 3.1.1's set_submission_webhook, word for word: Numerai calls the URL when a round opens.
_SET_WEBHOOK = """
          mutation (
            $modelId: String!
            $newSubmissionWebhook: String
          ) {
            setSubmissionWebhook(
              modelId: $modelId
              newSubmissionWebhook: $newSubmissionWebhook
            )
          }
        """


@dataclass(frozen=True)
class RoundInfo:
    """The current round and its submission window."""

    number: int
    open_time: datetime
    close_time: datetime

    def is_open(self, now: datetime | None = None) -> bool:
        """Whether submissions for this round can still be staked."""
        moment = now or datetime.now(UTC)
        return self.open_time <= moment < self.close_time


@dataclass(frozen=True)
class ListedSubmission:
    """One submission as Numerai lists it for a round."""

    id: str
    inserted_at: datetime  # before the round's openTime for a late submission queued into it
    trigger_id: str | None  # the webhook call's trigger id create_submission passed on, if any


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 4
    delay_seconds: float = 2.0
    timeout_seconds: float = 60.0  # an API try's whole answer; one read of an upload or download

    def run(self, what: str, call: Callable[[], T], transient: Callable[[Exception], bool]) -> T:
        """Call `call`, retrying transient failures with exponential backoff."""
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                if not transient(exc) or attempt == self.attempts:
                    raise
                wait = self.delay_seconds * 2 ** (attempt - 1)
                log.warning(
                    "%s failed (%s); try %d of %d in %.1f s",
                    what,
                    _reason(exc),
                    attempt + 1,
                    self.attempts,
                    wait,
                )
                time.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")


class _TransientHttpError(Exception):
    """An HTTP answer worth asking again for (5xx, 429)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _NoAnswer(NumeraiUnanswered):
    """One attempt got no usable answer (unreachable, too slow, 5xx): asking again may help.

    Numerai may or may not have acted on the request.
    """

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"Numerai API gave no answer to {operation} ({reason})")
        self.reason = reason


class _Overdue(Exception):
    """An attempt's deadline passed before its answer was complete."""


class _Restart(Exception):
    """A resumed download's answer cannot be appended; the next try starts from byte 0."""


class _Deadline:
    """A point in time, set by a setting, by which something must be finished."""

    def __init__(self, seconds: float, setting: str) -> None:
        self.seconds = seconds
        self.setting = setting
        self._ends_at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; raises _Overdue if none are."""
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise _Overdue(f"{self.setting} = {self.seconds:g} s")
        return left

    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self._ends_at


class _DependableNumerAPI(numerapi.NumerAPI):
    """numerapi, with `raw_query` given a deadline, a size limit, retries and typed errors."""

    def __init__(self, public_id: str, secret_key: str, policy: RetryPolicy) -> None:
        super().__init__(
            public_id=public_id,
            secret_key=secret_key,
            verbosity="warning",
            show_progress_bars=False,
        )
        self._policy = policy
        self._session = requests.Session()

    def raw_query(
        self,
        query: str,
        variables: dict | None = None,
        authorization: bool = False,
        **_numerapi_retry_options: Any,
    ) -> dict:
        """Send one GraphQL request (numerapi's signature; its retry options are replaced)."""
        operation = _operation(query)
        try:
            return self._policy.run(
                f"Numerai API {operation}",
                lambda: self._post_once(query, variables, authorization),
                lambda exc: isinstance(exc, _NoAnswer),
            )
        except _NoAnswer as exc:
            tries = f" after {self._policy.attempts} tries" if self._policy.attempts > 1 else ""
            raise NumeraiUnanswered(
                f"Numerai API did not answer {operation}{tries} (last: {exc.reason})"
            ) from None

    def _post_once(
        self, query: str, variables: dict | None = None, authorization: bool = False
    ) -> dict:
        """Send a GraphQL request exactly once and return its answer, which has `data`.

        The whole answer must arrive within NUMERAI_TIMEOUT_SECONDS and fit MAX_ANSWER_BYTES.
        Raises _NoAnswer when asking again may help (and Numerai may have acted on the
        request), NumeraiApiError when it cannot.
        """
        operation = _operation(query)
        headers = {"Content-type": "application/json", "Accept": "application/json"}
        if authorization:
            public_id, secret_key = self.token
            headers["Authorization"] = f"Token {public_id}${secret_key}"
        # Read on every call, as numerapi does, so a sandbox URL set later applies.
        url = numerapi.base_api.API_TOURNAMENT_URL
        body = {"query": query, "variables": variables}
        deadline = _Deadline(self._policy.timeout_seconds, "NUMERAI_TIMEOUT_SECONDS")
        try:
            with self._session.post(
                url, json=body, headers=headers, timeout=deadline.left(), stream=True
            ) as response:
                if response.status_code in _TRANSIENT_STATUS:
                    raise _TransientHttpError(response.status_code)
                if response.status_code >= 400:
                    raise NumeraiApiError(
                        f"Numerai API answered HTTP {response.status_code} to {operation}"
                    )
                answer = _read_answer(response, deadline, operation)
        except _Overdue as exc:
            raise _NoAnswer(operation, f"the answer took longer than {exc}") from None
        except (requests.RequestException, _TransientHttpError) as exc:
            if not _is_transient(exc):
                raise NumeraiApiError(
                    f"Numerai API could not be asked {operation}: {_reason(exc)}"
                ) from None
            raise _NoAnswer(operation, _reason(exc)) from None
        return _checked_answer(operation, answer)


def version_key(version: str) -> tuple[int, ...]:
    """A data version ("v5.2") as numbers, so that v5.10 sorts after v5.9."""
    return tuple(int(part) for part in version.removeprefix("v").split("."))


class NumeraiClient:
    """What a run needs from Numerai: the round, the data, the models, the submissions."""

    def __init__(self, settings: Settings) -> None:
        if settings.numerai_api_url:
            # numerapi has no endpoint parameter; its own tests repoint this constant.
            # Only the local sandbox sets NUMERAI_API_URL; deployments never do.
            numerapi.base_api.API_TOURNAMENT_URL = settings.numerai_api_url
        self._policy = RetryPolicy(
            settings.numerai_retries,
            settings.numerai_retry_delay_seconds,
            settings.numerai_timeout_seconds,
        )
        self._api = _DependableNumerAPI(
            settings.numerai_public_id, settings.numerai_secret_key, self._policy
        )
        # create_submission is not idempotent: asked twice, Numerai creates two submissions.
        self._api_once = _DependableNumerAPI(
            settings.numerai_public_id,
            settings.numerai_secret_key,
            replace(self._policy, attempts=1),
        )
        self._data_version = settings.data_version
        self._download_seconds = settings.numerai_download_timeout_seconds
        self._downloads = requests.Session()  # never carries the API keys

    def current_round(self) -> RoundInfo | None:
        """The current round, or None when Numerai reports none."""
        try:
            rounds = self._api.raw_query(_ROUND_QUERY, {"tournament": self._api.tournament_id})
        except NumeraiApiError as exc:
            # Between rounds the API has answered with this error instead of a round.
            if "not open" in str(exc).lower():
                return None
            raise
        raw = (rounds["data"].get("rounds") or [None])[0]
        if raw is None:
            return None
        return RoundInfo(
            int(raw["number"]), _parse_time(raw["openTime"]), _parse_time(raw["closeStakingTime"])
        )

    def key_scopes(self) -> list[str] | None:
        """The scopes of the API key in use (`upload_submission`, …); None when Numerai does not list it."""
        tokens = self._api.raw_query(_KEY_SCOPES_QUERY, authorization=True)["data"]["account"]
        for token in (tokens or {}).get("apiTokens") or []:
            if token.get("public_id") == self._api.token[0]:
                return list(token.get("scopes") or [])
        return None

    def model_ids(self) -> dict[str, str]:
        """The account's Classic models: name → model id."""
        return self._api.get_models()

    def data_versions(self, round_number: int) -> list[str]:
        """The data versions Numerai lists files of for the round, oldest first."""
        names = self._api.raw_query(
            _LIST_DATASETS_QUERY, {"round": round_number, "tournament": self._api.tournament_id}
        )["data"]["listDatasets"]
        versions = {m.group(1) for m in map(_VERSION_PREFIX.match, names or []) if m}
        return sorted(versions, key=version_key)

    def download(
        self, filename: str, directory: Path, round_number: int, data_version: str | None = None
    ) -> Path:
        """Download `<data version>/<filename>` of the round into `directory` and check it.

        `data_version` defaults to NUMERAI_DATA_VERSION. Every try of the file together
        gets NUMERAI_DOWNLOAD_TIMEOUT_SECONDS. The file appears under its name only once
        it is complete and, for parquet and JSON, well formed; until then it is
        `<filename>.partial`. Raises DataVersionUnavailable when Numerai has no such version.
        """
        version = data_version or self._data_version
        dataset = f"{version}/{filename}"
        try:
            url = self._api.raw_query(
                _DATASET_QUERY,
                {"filename": dataset, "round": round_number, "tournament": self._api.tournament_id},
            )["data"]["dataset"]
        except NumeraiApiError:
            self._check_version_listed(version, round_number)
            raise
        download = _Download(
            self._downloads,
            url,
            directory / filename,
            dataset,
            _Deadline(self._download_seconds, "NUMERAI_DOWNLOAD_TIMEOUT_SECONDS"),
            read_seconds=self._policy.timeout_seconds,
        )
        return download.run(self._policy)

    def _check_version_listed(self, version: str, round_number: int) -> None:
        """Raise DataVersionUnavailable if Numerai lists no file of `version` for the round."""
        try:
            listed = self.data_versions(round_number)
        except NumeraiApiError:
            return  # the caller's own error says what went wrong
        if version not in listed:
            raise DataVersionUnavailable(
                f"data version {version} is not available for round {round_number}: Numerai lists "
                f"{', '.join(listed) or 'no versions'}"
            ) from None

    def upload(self, model_name: str, model_id: str, csv_path: Path) -> str:
        """Upload a predictions CSV for a model; return the filename Numerai gave the upload.

        Nothing is submitted yet: `create_submission(filename)` does that. Both steps
        here may be repeated safely, so they are retried.
        """
        auth = self._api.raw_query(
            _UPLOAD_AUTH_QUERY,
            {"filename": csv_path.name, "tournament": self._api.tournament_id, "modelId": model_id},
            authorization=True,
        )["data"]["submission_upload_auth"]
        self._put(model_name, auth["url"], csv_path.read_bytes())
        return auth["filename"]

    def create_submission(self, model_id: str, filename: str, trigger_id: str | None = None) -> str:
        """Ask Numerai, once, to submit the uploaded `filename`; return the submission id.

        `trigger_id` is the one Numerai's webhook call carried, when the run started on it.
        Never retried: a request that timed out may still have created the submission.
        Raises NumeraiUnanswered when the outcome is unknown (then `find_submission`
        tells), NumeraiApiError when Numerai refused (then nothing was created).
        """
        created = self._api_once.raw_query(
            _CREATE_SUBMISSION,
            {
                "filename": filename,
                "tournament": self._api.tournament_id,
                "modelId": model_id,
                "triggerId": trigger_id,
                "dataDatestamp": None,
            },
            authorization=True,
        )["data"]["create_submission"]
        return str(created["id"])

    def set_submission_webhook(self, model_id: str, url: str | None) -> bool:
        """Register the URL Numerai calls when a round opens for the model (None clears it).

        Returns whether Numerai confirmed it. Setting a URL twice does no harm, so this is retried.
        """
        answer = self._api.raw_query(
            _SET_WEBHOOK, {"modelId": model_id, "newSubmissionWebhook": url}, authorization=True
        )
        # Numerai answers with the string "true", as numerapi compares it.
        return answer["data"].get("setSubmissionWebhook") == "true"

    def find_submission(self, model_id: str, filename: str) -> str | None:
        """The id of the model's submission of `filename`, or None if Numerai lists none.

        Filenames come from submission_upload_auth and are unique per upload, so a match is
        this very upload. Raises NumeraiApiError when the list cannot be had.
        """
        for submission in self._api.submission_ids(model_id):
            if submission.get("filename") == filename:
                return str(submission["id"])
        return None

    def round_submissions(self, model_id: str, round_number: int) -> dict[str, ListedSubmission]:
        """The model's submissions Numerai counts for the round (by `round.number`): id → what it lists.

        A late submission is queued into the next round, so its `insertedAt` falls before that
        round's openTime: only the round number says which round it counts for.
        Raises NumeraiApiError when the list cannot be had.
        """
        answer = self._api.raw_query(
            _ROUND_SUBMISSIONS_QUERY, {"modelId": model_id}, authorization=True
        )
        listed = {}
        for submission in answer["data"].get("submissions") or []:
            round_ = submission.get("round") or {}
            if round_.get("number") != round_number or round_.get("tournament") not in (
                None,
                self._api.tournament_id,
            ):
                continue
            listed[str(submission["id"])] = ListedSubmission(
                str(submission["id"]),
                _parse_time(str(submission["insertedAt"])),
                submission.get("triggerId"),
            )
        return listed

    def _put(self, model_name: str, url: str, payload: bytes) -> None:
        def put() -> None:
            response = requests.put(url, data=payload, timeout=self._policy.timeout_seconds)
            if response.status_code in _TRANSIENT_STATUS:
                raise _TransientHttpError(response.status_code)
            if not 200 <= response.status_code < 300:
                raise UploadError(
                    f"model '{model_name}': the upload of the predictions was refused "
                    f"(HTTP {response.status_code}); nothing was submitted"
                )

        try:
            self._policy.run(f"upload of model '{model_name}'", put, _is_transient)
        except (requests.RequestException, _TransientHttpError) as exc:
            raise UploadError(
                f"model '{model_name}': the upload of the predictions failed after "
                f"{self._policy.attempts} tries ({_reason(exc)}); nothing was submitted"
            ) from None


class _Download:
    """One dataset file fetched into `destination`: resumed where the server allows, checked
    before it takes its name."""

    def __init__(
        self,
        session: requests.Session,
        url: str,
        destination: Path,
        dataset: str,
        deadline: _Deadline,
        read_seconds: float,
    ) -> None:
        self._session = session
        self._url = url
        self._destination = destination
        self._partial = destination.with_name(destination.name + ".partial")
        self._dataset = dataset
        self._deadline = deadline
        self._read_seconds = read_seconds
        self._total: int | None = None  # the file's size, as the server announced it

    def run(self, policy: RetryPolicy) -> Path:
        """Fetch, retrying transient failures while time is left; check; rename into place."""
        try:
            policy.run(
                f"download of {self._dataset}",
                self._try_once,
                lambda exc: _is_transient(exc) and not self._deadline.passed(),
            )
            self._check()
        except (_Overdue, requests.RequestException, _TransientHttpError, _Restart) as exc:
            arrived = self._size()
            self._partial.unlink(missing_ok=True)
            if isinstance(exc, _Overdue) or self._deadline.passed():
                raise NumeraiApiError(
                    f"download of {self._dataset} failed: not complete after {self._deadline.setting} = "
                    f"{self._deadline.seconds:g} s ({arrived} of {self._total or 'unknown'} bytes arrived)"
                ) from None
            if not _is_transient(exc):
                raise NumeraiApiError(
                    f"download of {self._dataset} failed: {_reason(exc)}"
                ) from None
            raise NumeraiApiError(
                f"download of {self._dataset} failed after {policy.attempts} tries (last: {_reason(exc)})"
            ) from None
        except Exception:
            self._partial.unlink(missing_ok=True)
            raise
        self._partial.replace(self._destination)
        return self._destination

    def _try_once(self) -> None:
        """One GET: resume the partial file if there is one, else start it."""
        have = self._size()
        headers = {"Range": f"bytes={have}-"} if have else {}
        timeout = min(self._read_seconds, self._deadline.left())
        with self._session.get(
            self._url, headers=headers, stream=True, timeout=timeout
        ) as response:
            if response.status_code in _TRANSIENT_STATUS:
                raise _TransientHttpError(response.status_code)
            if response.status_code >= 400:
                raise NumeraiApiError(
                    f"download of {self._dataset} failed: HTTP {response.status_code}"
                )
            start, total = _placement(response)
            if start != have or (have and total != self._total):
                # A server may ignore Range and send the whole file (HTTP allows it), or
                # the file may have changed: appending would corrupt it.
                self._partial.unlink(missing_ok=True)
                if start != 0:
                    raise _Restart(
                        f"asked for the file from byte {have}, the server sent "
                        f"{'an unusable range' if start is None else f'bytes from {start}'}"
                    )
                log.info(
                    "download of %s: the server did not resume at byte %d; starting over",
                    self._dataset,
                    have,
                )
            self._total = total
            with self._partial.open("ab" if start else "wb") as file:
                for chunk in _chunks(response, self._deadline):
                    file.write(chunk)

    def _check(self) -> None:
        """Refuse a file that is not whole: the wrong size, or not what its name says."""
        size = self._size()
        if self._total is not None and size != self._total:
            raise DataError(
                f"download of {self._dataset} failed: {size} bytes arrived, "
                f"the server announced {self._total}"
            )
        check = _FORMAT_CHECKS.get(self._destination.suffix)
        problem = check(self._partial) if check else None
        if problem:
            raise DataError(f"download of {self._dataset} failed: {problem}")

    def _size(self) -> int:
        return self._partial.stat().st_size if self._partial.exists() else 0


def _placement(response: requests.Response) -> tuple[int | None, int | None]:
    """(where the answer's bytes start in the file, the file's size), None where unknown.

    A 206 that does not run to the end of the file cannot be used: its start is None.
    """
    if response.status_code != 206:
        return 0, _content_length(response)
    match = re.fullmatch(
        r"bytes (\d+)-(\d+)/(\d+)", response.headers.get("Content-Range", "").strip()
    )
    if match is None or int(match[2]) != int(match[3]) - 1:
        return None, None
    return int(match[1]), int(match[3])


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _parquet_problem(path: Path) -> str | None:
    """Why `path` cannot be a whole parquet file, judged from its ends; None if it may be.

    A parquet file starts and ends with PAR1, and its last 8 bytes hold the footer's
    length before that magic. Read here without pyarrow, which the run's process
    never imports.
    """
    size = path.stat().st_size
    if size < 12:
        return f"not a readable parquet file ({size} bytes)"
    with path.open("rb") as file:
        head = file.read(4)
        file.seek(-8, 2)
        tail = file.read(8)
    if head != b"PAR1":
        return f"not a readable parquet file (it starts with {head!r}, not PAR1)"
    if tail[4:] != b"PAR1":
        return f"not a readable parquet file (it ends with {tail[4:]!r}, not PAR1)"
    footer = int.from_bytes(tail[:4], "little")
    if footer > size - 12:
        return f"not a readable parquet file (its footer of {footer} bytes is larger than the file)"
    return None


def _json_problem(path: Path) -> str | None:
    """Why `path` is not JSON; None if it parses."""
    try:
        json.loads(path.read_bytes())
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    return None


_FORMAT_CHECKS: dict[str, Callable[[Path], str | None]] = {
    ".parquet": _parquet_problem,
    ".json": _json_problem,
}


def _chunks(response: requests.Response, deadline: _Deadline) -> Iterator[bytes]:
    """The body of a streamed `response` as it arrives; raises _Overdue when `deadline` passes.

    read1 returns what has arrived instead of waiting to fill a buffer, and each read
    may wait only for the time left, so a trickle cannot outlast the deadline.
    """
    raw = response.raw
    while True:
        _wait_at_most(raw, deadline.left())
        try:
            chunk = raw.read1(_READ_BYTES)
        except urllib3.exceptions.ReadTimeoutError:
            deadline.left()  # a read cut short by the deadline is overdue, not a timeout
            raise requests.ReadTimeout() from None
        except urllib3.exceptions.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from None
        if not chunk:
            return
        yield chunk


def _wait_at_most(raw: urllib3.HTTPResponse, seconds: float) -> None:
    # The socket keeps the read timeout requests gave it; lower it to the time left.
    sock = getattr(raw.connection, "sock", None)
    if sock is not None:
        sock.settimeout(min(seconds, sock.gettimeout() or seconds))


def _read_answer(response: requests.Response, deadline: _Deadline, operation: str) -> bytes:
    """The whole body of an API answer, refused as soon as it is known to be too large."""
    announced = _content_length(response)
    if announced is not None and announced > MAX_ANSWER_BYTES:
        raise NumeraiApiError(
            f"{_too_large(operation)} (it announced {announced} bytes); refused unread"
        )
    body = bytearray()
    for chunk in _chunks(response, deadline):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise NumeraiApiError(
                f"{_too_large(operation)} (it sent more); refused after reading "
                f"{MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
            )
    return bytes(body)


def _too_large(operation: str) -> str:
    return (
        f"Numerai API's answer to {operation} is over the {MAX_ANSWER_BYTES // (1024 * 1024)} MiB "
        "limit for any answer"
    )


def _checked_answer(operation: str, body: bytes) -> dict:
    """The answer as JSON, if it is a GraphQL answer with data and no errors."""
    try:
        result = json.loads(body)
    except ValueError:
        raise NumeraiApiError(f"Numerai API sent a reply to {operation} that is not JSON") from None
    if not isinstance(result, dict):
        raise NumeraiApiError(f"Numerai API sent a reply to {operation} that is not a JSON object")
    if result.get("errors"):
        raise _graphql_error(operation, result["errors"])
    if not isinstance(result.get("data"), dict):
        raise NumeraiApiError(f"Numerai API sent no data for {operation}")
    return result


def _is_transient(exc: Exception) -> bool:
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            _TransientHttpError,
            _Restart,
            requests.exceptions.ChunkedEncodingError,
        ),
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _NoAnswer):
        return exc.reason
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke off mid-transfer"
    return _URL_QUERY.sub(r"\1", str(exc))[:200] or type(exc).__name__


def _operation(query: str) -> str:
    """The first field a GraphQL document asks for, to name the call in messages."""
    match = re.search(r"\{\s*(\w+)", query)
    return match.group(1) if match else "a query"


def _graphql_error(operation: str, errors: list[dict]) -> NumeraiApiError:
    message = _ECHOED_TOKEN.sub(r"\1***", "; ".join(str(e.get("message", e)) for e in errors))[:500]
    if any(word in message.lower() for word in _AUTH_WORDS):
        return NumeraiKeysRefused(
            f"Numerai refused the API keys (NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY) for "
            f"{operation}: {message}. Check that the key is current and may upload submissions "
            "and read the account, and that NUMERAI_PUBLIC_ID holds the key's public id (not the "
            "username) and NUMERAI_SECRET_KEY its secret, not swapped"
        )
    return NumeraiApiError(f"Numerai API refused {operation}: {message}")


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
