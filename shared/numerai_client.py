"""The Numerai API, through numerapi, made dependable for an unattended job.

numerapi sends every GraphQL request through `Api.raw_query`, which sets no
timeout, retries only 5xx, and turns other failures into `{}` (the caller then
dies with `KeyError: 'data'`). `_DependableNumerAPI` overrides that one method:
numerapi keeps writing the queries, and each one now has a timeout, retries
with backoff on connection errors, timeouts and 5xx, and raises our own
errors in words a user understands. GraphQL errors (bad keys, unknown model)
are not retried: asking again cannot fix them.

numerapi also never checks the status of the presigned PUT that carries the
predictions, so `submit` does the upload itself and confirms the submission
through the API before anyone records it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numerapi
import numerapi.base_api
import requests

from shared.errors import NumeraiApiError, NumeraiUnanswered, UploadError
from shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Words Numerai uses when it refuses the keys; matched loosely on purpose.
_AUTH_WORDS = ("authenticat", "api key", "api_key", "token", "permission", "unauthori")
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# The Authorization header's value, "Token <public id>$<secret key>", as written or
# URL-encoded: an API error has echoed it. Cut out of every message, whatever the
# redaction of logs and reports knows.
_ECHOED_TOKEN = re.compile(r"(Token(?:\s+|%20|\+))[^\s\"',;()]*(?:\$|%24)[^\s\"',;()]*", re.IGNORECASE)
# A presigned URL's query (X-Amz-Signature, X-Amz-Security-Token) is a credential for the file.
_URL_QUERY = re.compile(r"(https?://[^\s?#]+)\?[^\s#]*")

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


@dataclass(frozen=True)
class RoundInfo:
    """The current round and its submission window."""

    number: int
    open_time: datetime
    close_time: datetime

    def is_open(self, now: datetime | None = None) -> bool:
        """Whether submissions for this round can still be staked."""
        moment = now or datetime.now(timezone.utc)
        return self.open_time <= moment < self.close_time


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 4
    delay_seconds: float = 2.0
    timeout_seconds: float = 60.0

    def run(self, what: str, call: Callable[[], T], transient: Callable[[Exception], bool]) -> T:
        """Call `call`, retrying transient failures with exponential backoff."""
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                if not transient(exc) or attempt == self.attempts:
                    raise
                wait = self.delay_seconds * 2 ** (attempt - 1)
                log.warning("%s failed (%s); try %d of %d in %.1f s", what, _reason(exc),
                            attempt + 1, self.attempts, wait)
                time.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")


class _TransientHttpError(Exception):
    """An HTTP answer worth asking again for (5xx, 429)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _DependableNumerAPI(numerapi.NumerAPI):
    """numerapi, with `raw_query` given a timeout, retries and typed errors."""

    def __init__(self, public_id: str, secret_key: str, policy: RetryPolicy) -> None:
        super().__init__(public_id=public_id, secret_key=secret_key, verbosity="warning",
                         show_progress_bars=False)
        self._policy = policy
        self._session = requests.Session()

    def raw_query(self, query: str, variables: dict | None = None, authorization: bool = False,
                  **_numerapi_retry_options: Any) -> dict:
        """Send one GraphQL request (numerapi's signature; its retry options are replaced)."""
        operation = _operation(query)
        headers = {"Content-type": "application/json", "Accept": "application/json"}
        if authorization:
            public_id, secret_key = self.token
            headers["Authorization"] = f"Token {public_id}${secret_key}"
        body = {"query": query, "variables": variables}

        def post() -> dict:
            # Read on every call, as numerapi does, so a sandbox URL set later applies.
            response = self._session.post(numerapi.base_api.API_TOURNAMENT_URL, json=body,
                                          headers=headers, timeout=self._policy.timeout_seconds)
            if response.status_code in _TRANSIENT_STATUS:
                raise _TransientHttpError(response.status_code)
            if response.status_code >= 400:
                raise NumeraiApiError(f"Numerai API answered HTTP {response.status_code} to {operation}")
            try:
                return response.json()
            except ValueError:
                # A proxy's error page, say: the API itself may have acted on the request.
                raise NumeraiUnanswered(f"Numerai API sent a reply to {operation} that is not JSON") from None

        try:
            result = self._policy.run(f"Numerai API {operation}", post, _is_transient)
        except (requests.RequestException, _TransientHttpError) as exc:
            tries = f" after {self._policy.attempts} tries" if self._policy.attempts > 1 else ""
            raise NumeraiUnanswered(
                f"Numerai API did not answer {operation}{tries} (last: {_reason(exc)})"
            ) from None
        if result.get("errors"):
            raise _graphql_error(operation, result["errors"])
        if not isinstance(result.get("data"), dict):
            raise NumeraiApiError(f"Numerai API sent no data for {operation}")
        return result


class NumeraiClient:
    """What a run needs from Numerai: the round, the data, the models, the submissions."""

    def __init__(self, settings: Settings) -> None:
        if settings.numerai_api_url:
            # numerapi has no endpoint parameter; its own tests repoint this constant.
            # Only the local sandbox sets NUMERAI_API_URL; deployments never do.
            numerapi.base_api.API_TOURNAMENT_URL = settings.numerai_api_url
        self._policy = RetryPolicy(settings.numerai_retries, settings.numerai_retry_delay_seconds,
                                   settings.numerai_timeout_seconds)
        self._api = _DependableNumerAPI(settings.numerai_public_id, settings.numerai_secret_key,
                                        self._policy)
        # create_submission is not idempotent: asked twice, Numerai creates two submissions.
        self._api_once = _DependableNumerAPI(settings.numerai_public_id, settings.numerai_secret_key,
                                             replace(self._policy, attempts=1))
        self._data_version = settings.data_version

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
        return RoundInfo(int(raw["number"]), _parse_time(raw["openTime"]), _parse_time(raw["closeStakingTime"]))

    def model_ids(self) -> dict[str, str]:
        """The account's Classic models: name → model id."""
        return self._api.get_models()

    def download(self, filename: str, directory: Path, round_number: int) -> Path:
        """Download `<data version>/<filename>` of the round into `directory` (which must be new).

        numerapi skips a file that already exists with the same size, so each run
        downloads into a folder of its own.
        """
        destination = directory / filename
        dataset = f"{self._data_version}/{filename}"

        def fetch() -> str:
            return self._api.download_dataset(dataset, str(destination), round_num=round_number)

        try:
            return Path(self._policy.run(f"download of {dataset}", fetch, _is_transient))
        except requests.RequestException as exc:
            raise NumeraiApiError(f"download of {dataset} failed: {_reason(exc)}") from None

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

    def create_submission(self, model_id: str, filename: str) -> str:
        """Ask Numerai, once, to submit the uploaded `filename`; return the submission id.

        Never retried: a request that timed out may still have created the submission.
        Raises NumeraiUnanswered when the outcome is unknown (then `find_submission`
        tells), NumeraiApiError when Numerai refused (then nothing was created).
        """
        created = self._api_once.raw_query(
            _CREATE_SUBMISSION,
            {"filename": filename, "tournament": self._api.tournament_id, "modelId": model_id,
             "triggerId": None, "dataDatestamp": None},
            authorization=True,
        )["data"]["create_submission"]
        return str(created["id"])

    def find_submission(self, model_id: str, filename: str) -> str | None:
        """The id of the model's submission of `filename`, or None if Numerai lists none.

        Filenames come from submission_upload_auth and are unique per upload, so a match is
        this very upload. Raises NumeraiApiError when the list cannot be had.
        """
        for submission in self._api.submission_ids(model_id):
            if submission.get("filename") == filename:
                return str(submission["id"])
        return None

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


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, requests.HTTPError):  # raised by numerapi's download for 4xx and 5xx
        return exc.response is not None and exc.response.status_code in _TRANSIENT_STATUS
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, _TransientHttpError,
                            requests.exceptions.ChunkedEncodingError))


def _reason(exc: BaseException) -> str:
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
        return NumeraiApiError(
            f"Numerai refused the API keys (NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY) for "
            f"{operation}: {message}. Check that the key is current and may upload submissions "
            "and read the account"
        )
    return NumeraiApiError(f"Numerai API refused {operation}: {message}")


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
