"""A local stand-in for the Numerai Tournament API, for tests, CI and the demo.

The real API (https://api-tournament.numer.ai) cannot be reached from tests, and calling
it would submit real predictions. This sandbox answers the part of Numerai's GraphQL API
that numerapi uses to run one Classic round: the current round, listing and downloading
datasets, the account's models, the three-step upload of predictions
(``submission_upload_auth``, an HTTP PUT to a presigned URL, ``create_submission``), and
``setSubmissionWebhook``, whose URLs `open_new_round` (and ``triggerModelWebhook``) call as
Numerai does. It imitates Numerai as its public sources show it; docs/sandbox.md lists each
behaviour with its source, and each known difference.

numerapi has no setting for its endpoint: ``Api.raw_query`` reads the module constant
``numerapi.base_api.API_TOURNAMENT_URL`` on every call, and numerapi's own tests point it
elsewhere the same way::

    with NumeraiSandbox() as sandbox:
        sandbox.add_dataset_dir("v5.3", "data/v5.3")
        numerapi.base_api.API_TOURNAMENT_URL = sandbox.url  # monkeypatch.setattr in tests
        napi = numerapi.NumerAPI(*sandbox.credentials)
        napi.get_current_round()

Every GraphQL request is executed by graphql-core against ``SCHEMA_SDL``, which declares
only the fields numerapi selects. A query that does not fit (say, after a numerapi
upgrade) gets a GraphQL ``errors`` array with HTTP 200, as the real API answers, and
numerapi raises ``ValueError``: a change fails loudly instead of passing unnoticed.

Behaviour worth knowing:

* Closed round: ``rounds(number: 0)`` keeps returning the latest round after its
  ``closeStakingTime`` has passed, so ``get_current_round()`` still gives its number and
  ``check_round_open()`` gives False. The real API returns the latest round the same way;
  numerapi's source notes that it has also answered with the GraphQL error "Current round
  not open for submissions" between rounds. Tests of that variant inject it with
  ``faults.graphql_error``.
* Submissions are accepted whether or not the round is open (Numerai scores late
  submissions; they just cannot be staked). One made after ``closeStakingTime`` is queued
  into the next round: it is listed with ``round { number }`` of that round, and its
  ``insertedAt`` is before that round's ``openTime``.
* Upload names are Numerai's shape (``predictions-pPbLKSHGiR.csv``), not the name uploaded,
  and presigned URLs stop working after ``presigned_url_seconds`` (403 with S3's XML).
* ``listDatasets`` and ``dataset`` ignore the ``round`` argument: one set of files is
  served for every round.
* Downloads honour ``Range: bytes=N-``, because the app (like numerapi) resumes an
  interrupted download with exactly that header.
* Faults (5xx answers, GraphQL errors, failed PUTs and downloads, delays, answers that
  trickle or are oversized, an ignored ``Range``) are set through ``sandbox.faults``;
  see `SandboxFaults`.

Run by hand: ``python -m devkit.numerai_sandbox --data-dir DIR --version v5.3`` prints the
URL on stdout and logs the credentials and model ids.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import secrets
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLResolveInfo,
    OperationDefinitionNode,
    build_schema,
    graphql_sync,
    parse,
)

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
CLASSIC_TOURNAMENT = 8
DEFAULT_PUBLIC_ID = "SANDBOX_PUBLIC_ID"
DEFAULT_SECRET_KEY = "SANDBOX_SECRET_KEY"
DEFAULT_MODEL_NAME = "sandbox_model"
DEFAULT_ROUND_NUMBER = 1200
DEFAULT_ROUND_LENGTH = timedelta(hours=1)

# Numerai's answer to a wrong or revoked key (numerapi tests/test_numerapi.py, numerapi issue 7).
# How long a presigned URL (a dataset's GET, an upload's PUT) works; S3 then answers 403 with XML.
# Numerai's lifetime is not published: an assumption (docs/sandbox.md).
PRESIGNED_URL_SECONDS = 600.0
# Numerai's closeTime is later than closeStakingTime: 12 h in numerapi's test mock (tests/test_base_api.py
# test_list_rounds); the real gap per round is not published.
CLOSE_AFTER_STAKING = timedelta(hours=12)
# S3's answer to a presigned URL past its lifetime.
EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)
_FILENAME_LETTERS = string.ascii_letters
AUTH_ERROR = "Your session is invalid or has expired."
# An API key's scopes, as numerapi's get_account documents them ('upload_submission', 'stake', ..);
# the other two are the names Numerai's key settings show for reading the account and submissions.
ALL_SCOPES = ("upload_submission", "stake", "read_submission_info", "read_user_info")
# Numerai's words for a key without the scope an action needs are not published: an assumption
# (docs/sandbox.md) that keeps the word the client recognises a key refusal by.
SCOPE_ERROR = "Insufficient permission: this API key lacks the '{scope}' scope"
FILES_PATH = "/files/"
UPLOADS_PATH = "/uploads/"
_COPY_CHUNK_BYTES = 1024 * 1024
_POLL_INTERVAL_SECONDS = 0.05
_TRICKLE_INTERVAL_SECONDS = 0.1
# How long a webhook call waits for its answer (the app answers at once).
WEBHOOK_TIMEOUT_SECONDS = 30.0

SCHEMA_SDL = """
type Query {
  rounds(tournament: Int, number: Int, target: String, status: RoundStatus, limit: Int): [Round!]!
  listDatasets(round: Int, tournament: Int): [String!]!
  dataset(filename: String!, round: Int, tournament: Int): String!
  account: Account!
  submission_upload_auth(filename: String!, tournament: Int!, modelId: String): UploadAuth!
  submissions(modelId: String): [Submission!]!
  model(modelId: String): Model
}

type Mutation {
  create_submission(
    filename: String!
    tournament: Int!
    modelId: String
    triggerId: String
    source: String
    dataDatestamp: Int
  ): Submission!
  setSubmissionWebhook(modelId: String!, newSubmissionWebhook: String): String!
  triggerModelWebhook(modelId: String!): String!
}

enum RoundStatus { UPCOMING OPEN RESOLVING RESOLVED }

type Round {
  id: ID!
  tournament: Int!
  number: Int!
  target: String
  openTime: String!
  closeTime: String
  closeStakingTime: String!
  scoreTime: String
  resolveTime: String
  resolvedGeneral: Boolean!
  resolvedStaking: Boolean!
  payoutFactor: String
  stakeThreshold: Float
  dataDatestamp: Int
  roundScoreConfigs: [RoundScoreConfig!]!
}

type RoundScoreConfig {
  id: ID!
  scoreConfigId: ID
  roundNumberStart: Int
  roundNumberEnd: Int
  name: String
  version: String
  displayName: String
  totalScoreDays: Int
  returnsLagDays: Int
  dataDelayDays: Int
  universe: String
  isCanonScore: Boolean
  isPayout: Boolean
  scoringStart: String
  scoringEnd: String
  minMultiplier: Float
  maxMultiplier: Float
  defaultMultiplier: Float
  clipThreshold: Float
  stakeThreshold: Float
  payoutFactor: String
}

type Account { models: [Model!]! apiTokens: [ApiToken!]! }

type ApiToken { name: String! public_id: String! scopes: [String!]! }

type Model { id: ID! name: String! tournament: Int! submissions: [Submission!]! }

type UploadAuth { filename: String! url: String! }

type Submission {
  id: ID!
  filename: String!
  insertedAt: String!
  round: Round!
  triggerId: String
  selected: Boolean!
}
"""

_SCHEMA = build_schema(SCHEMA_SDL)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SandboxRound:
    """A tournament round; times must be timezone-aware (numerapi compares them to UTC now)."""

    number: int
    open_time: datetime
    close_staking_time: datetime
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if self.open_time.tzinfo is None or self.close_staking_time.tzinfo is None:
            raise ValueError("SandboxRound times must be timezone-aware (UTC)")

    @property
    def close_time(self) -> datetime:
        """Numerai's closeTime: later than the staking close (numerapi's test mock)."""
        return self.close_staking_time + CLOSE_AFTER_STAKING

    def status(self, now: datetime) -> str:
        """The RoundStatus enum value the round has at `now`."""
        if now < self.open_time:
            return "UPCOMING"
        if now < self.close_staking_time:
            return "OPEN"
        return "RESOLVING"


@dataclass(frozen=True)
class SandboxSubmission:
    """One submission accepted by ``create_submission``."""

    id: str
    model_id: str
    model_name: str
    round: (
        int  # the round it counts for: the next one for a late submission (queued, as Numerai does)
    )
    filename: str
    csv: bytes
    inserted_at: datetime
    trigger_id: str | None = (
        None  # create_submission's triggerId: set when a webhook call started the run
    )


@dataclass(frozen=True)
class SandboxWebhookCall:
    """One call the sandbox made to a model's registered webhook (a round opened, or triggerModelWebhook)."""

    url: str
    round: int
    trigger_id: str
    status: int | None  # the HTTP status answered; None if no answer came
    error: str | None = None  # why no answer came
    model_id: str | None = None  # whose webhook it was: Numerai calls each model's own

    @property
    def succeeded(self) -> bool:
        """Whether Numerai counts the call as a success: only a 200 does (numerai-cli's triggers)."""
        return self.status == HTTPStatus.OK


@dataclass
class SandboxFaults:
    """Failures to inject; each lasts until `reset` unless its comment says otherwise.

    api_5xx: the next N GraphQL POSTs answer HTTP 503 (counts down).
    api_5xx_forever: every GraphQL POST answers HTTP 503.
    graphql_error: the next GraphQL POST answers HTTP 200 with this message in an
        ``errors`` array (one-shot).
    put_status: presigned PUTs answer this HTTP status and store nothing.
    create_submission_error: ``create_submission`` fails with this GraphQL error.
    create_submission_delay_seconds: ``create_submission`` creates the submission, then
        waits this long before answering (a client with a shorter timeout never hears back).
    create_submission_status: ``create_submission`` creates the submission, then answers
        this HTTP status instead of its result (a gateway that failed on the way back).
    hide_submissions: the ``submissions`` query lists nothing.
    list_lag_seconds: a submission is listed only this long after it was created (the
        ``submissions`` and ``model`` queries), as a list that lags behind ``create_submission``.
    submissions_status: the ``submissions`` query answers this HTTP status.
    download_status: dataset GETs answer this HTTP status.
    truncate_download: dataset GETs announce the full length, send half, then close.
    delay_seconds: every request waits this long before it is answered.
    graphql_error_echoing_auth: when N > 0, the next GraphQL POST that carries an
        ``Authorization`` header answers HTTP 200 with an error that echoes the header,
        its secret key cut to N characters, both as received and URL-encoded, as an API
        error once did with 26 characters of a real key (one-shot).
    trickle_graphql_seconds: GraphQL answers arrive in small pieces spread over this
        long; each piece comes within a tenth of a second, so no single socket read
        times out, yet the whole answer takes this long.
    trickle_download_seconds: the same for dataset GETs.
    ignore_range: dataset GETs answer 200 with the whole file, whatever ``Range`` asks
        (HTTP allows it; a client that appends the answer to its partial file is wrong).
    pad_graphql_bytes: GraphQL answers are padded with spaces (still valid JSON) to
        this many bytes.
    graphql_without_length: GraphQL answers carry no Content-Length and end when the
        connection closes, as a chunked answer would: only the bytes read tell the size.
    """

    api_5xx: int = 0
    api_5xx_forever: bool = False
    graphql_error: str | None = None
    put_status: int | None = None
    create_submission_error: str | None = None
    create_submission_delay_seconds: float = 0.0
    create_submission_status: int | None = None
    hide_submissions: bool = False
    list_lag_seconds: float = 0.0
    submissions_status: int | None = None
    download_status: int | None = None
    truncate_download: bool = False
    delay_seconds: float = 0.0
    graphql_error_echoing_auth: int = 0
    trickle_graphql_seconds: float = 0.0
    trickle_download_seconds: float = 0.0
    ignore_range: bool = False
    pad_graphql_bytes: int = 0
    graphql_without_length: bool = False

    def reset(self) -> None:
        """Clear every fault."""
        for spec in fields(self):
            setattr(self, spec.name, spec.default)


@dataclass
class _Upload:
    filename: str
    model_id: str
    expires_at: datetime
    body: bytes | None = None


class NumeraiSandbox:
    """A Numerai API look-alike on 127.0.0.1, configurable and inspectable from Python.

    Public state, which tests may read or change at any time:
    ``round``, ``datasets`` (name -> local path), ``models`` (name -> id), ``public_id``,
    ``secret_key``, ``faults``, ``on_request``. Read-only views: ``submissions``, ``requests_log``.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        public_id: str = DEFAULT_PUBLIC_ID,
        secret_key: str = DEFAULT_SECRET_KEY,
        models: Mapping[str, str] | None = None,
        round_number: int = DEFAULT_ROUND_NUMBER,
    ) -> None:
        """Prepare a sandbox; nothing listens until `start`.

        `models` maps model names to ids; by default one model, ``sandbox_model``, with a
        random uuid. The current round opened five minutes ago and closes in an hour.
        """
        self.public_id = public_id
        self.secret_key = secret_key
        # The key's scopes: tests take some away to see what a key that may not upload does.
        self.key_scopes: list[str] = list(ALL_SCOPES)
        self.models: dict[str, str] = (
            dict(models) if models is not None else {DEFAULT_MODEL_NAME: str(uuid.uuid4())}
        )
        now = _now()
        self.round = SandboxRound(
            round_number, now - timedelta(minutes=5), now + DEFAULT_ROUND_LENGTH
        )
        # How long presigned URLs work; tests shorten it to see one expire.
        self.presigned_url_seconds = PRESIGNED_URL_SECONDS
        self.datasets: dict[str, Path] = {}
        self.faults = SandboxFaults()
        # Called with each request's log entry before it is answered, so that a test can
        # act at an exact point of a run: close the round, hold an upload, ...
        self.on_request: Callable[[str], None] | None = None
        self._port = port
        self._lock = threading.RLock()
        self._submissions: list[SandboxSubmission] = []
        self._requests_log: list[str] = []
        self._uploads: dict[str, _Upload] = {}
        self._webhooks: dict[str, str] = {}  # model id -> URL, as setSubmissionWebhook set it
        self._webhook_calls: list[SandboxWebhookCall] = []
        self._webhook_threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._root = {
            "rounds": self._resolve_rounds,
            "listDatasets": self._resolve_list_datasets,
            "dataset": self._resolve_dataset,
            "account": self._resolve_account,
            "submission_upload_auth": self._resolve_upload_auth,
            "create_submission": self._resolve_create_submission,
            "submissions": self._resolve_submissions,
            "setSubmissionWebhook": self._resolve_set_webhook,
            "triggerModelWebhook": self._resolve_trigger_webhook,
            "model": self._resolve_model,
        }
        self._past_rounds: dict[
            int, SandboxRound
        ] = {}  # the rounds before `round`, for Submission.round

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> NumeraiSandbox:
        """Bind 127.0.0.1 and serve in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the Numerai sandbox is already running")
        self._server = _Server(self._port, self)
        # stop() waits up to one poll interval; the default half second adds up in tests.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
            name="numerai-sandbox",
            daemon=True,
        )
        self._thread.start()
        log.info("Numerai sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to put in ``numerapi.base_api.API_TOURNAMENT_URL``."""
        if self._server is None:
            raise RuntimeError("the Numerai sandbox is not running: call start() first")
        return f"http://{HOST}:{self._server.server_address[1]}"

    # --- configuration and inspection ------------------------------------------------

    @property
    def credentials(self) -> tuple[str, str]:
        """(public_id, secret_key), in the order ``numerapi.NumerAPI`` takes them."""
        return self.public_id, self.secret_key

    def add_dataset(self, name: str, path: str | Path) -> None:
        """Serve the local file `path` as dataset `name` (e.g. "v5.3/live.parquet")."""
        with self._lock:
            self.datasets[name] = Path(path)

    def add_dataset_dir(self, version: str, directory: str | Path) -> None:
        """Serve every file directly inside `directory` as ``<version>/<file name>``."""
        for path in sorted(Path(directory).iterdir()):
            if path.is_file():
                self.add_dataset(f"{version}/{path.name}", path)

    def open_new_round(self, duration: timedelta = DEFAULT_ROUND_LENGTH) -> SandboxRound:
        """Open round number+1 now, closing for staking after `duration`.

        Like Numerai, then calls each model's registered webhook, once per model with a trigger id of
        its own, even when models share a URL (webhooks are set per model, and numerai-cli's test checks
        each model's submission carries its own trigger id), each in a thread of its own without
        waiting: `wait_for_webhooks` returns the calls once they are answered.
        """
        now = _now()
        with self._lock:
            self._past_rounds[self.round.number] = self.round
            self.round = SandboxRound(self.round.number + 1, now, now + duration)
            opened = self.round
            hooks = sorted(self._webhooks.items())
        for model_id, url in hooks:
            self._start_call(model_id, url, opened.number, is_test=False)
        return opened

    def _start_call(self, model_id: str, url: str, round_number: int, *, is_test: bool) -> str:
        """Call a model's webhook in a thread of its own; returns the call's fresh trigger id."""
        trigger_id = uuid.uuid4().hex
        call = threading.Thread(
            target=self._call_webhook,
            daemon=True,
            name="numerai-sandbox-webhook",
            args=(model_id, url, round_number, trigger_id, is_test),
        )
        with self._lock:
            self._webhook_threads.append(call)
        call.start()
        return trigger_id

    @property
    def webhooks(self) -> dict[str, str]:
        """A snapshot of the registered webhooks: model id -> URL."""
        with self._lock:
            return dict(self._webhooks)

    def wait_for_webhooks(
        self, timeout: float = WEBHOOK_TIMEOUT_SECONDS
    ) -> list[SandboxWebhookCall]:
        """Wait for the webhook calls under way to be answered; every call made so far, oldest first."""
        with self._lock:
            pending, self._webhook_threads = self._webhook_threads, []
        for thread in pending:
            thread.join(timeout)
        with self._lock:
            return list(self._webhook_calls)

    def _call_webhook(
        self, model_id: str, url: str, round_number: int, trigger_id: str, is_test: bool
    ) -> None:
        """POST what Numerai's call carries, as a community template reads it
        (hiohiohio/numerai-compute-cloudrun-template common/main.py): no model id, which the URL
        must carry; `dataVersion` an integer there (which integer is an assumption: the major version)."""
        body = json.dumps(
            {
                "roundNumber": round_number,
                "triggerId": trigger_id,
                "dataVersion": self._data_version_number(),
                "isTest": is_test,
            }
        ).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        status: int | None = None
        error = None
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:  # an answer all the same: 4xx, 5xx
            status = exc.code
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._webhook_calls.append(
                SandboxWebhookCall(url, round_number, trigger_id, status, error, model_id)
            )

    def _data_version_number(self) -> int:
        """The newest data version served, as the integer the webhook body carries (v5.3 → 5)."""
        with self._lock:
            versions = sorted({name.split("/", 1)[0] for name in self.datasets})
        digits = versions[-1].removeprefix("v").split(".")[0] if versions else "5"
        return int(digits) if digits.isdigit() else 5

    def close_round(self) -> None:
        """End the current round's submission window now; the round stays the latest."""
        with self._lock:
            self.round.close_staking_time = _now()

    @property
    def submissions(self) -> list[SandboxSubmission]:
        """A snapshot of the submissions accepted so far, oldest first."""
        with self._lock:
            return list(self._submissions)

    @property
    def requests_log(self) -> list[str]:
        """A snapshot of the requests received, oldest first.

        GraphQL POSTs appear as ``"graphql <root fields>"`` (e.g. ``"graphql rounds"``),
        others as ``"<METHOD> <path>"`` (e.g. ``"GET /files/v5.3/live.parquet"``).
        """
        with self._lock:
            return list(self._requests_log)

    # --- HTTP-level behaviour, called by the request handler -------------------------

    def _record(self, entry: str) -> None:
        with self._lock:
            self._requests_log.append(entry)
        hook = self.on_request
        if hook is not None:
            hook(entry)

    def _pause(self) -> None:
        if self.faults.delay_seconds > 0:
            time.sleep(self.faults.delay_seconds)

    def _take_api_fault(self) -> tuple[bool, str | None]:
        """Consume the faults that apply to one GraphQL POST: (answer 503?, error message)."""
        with self._lock:
            faults = self.faults
            if faults.api_5xx_forever:
                return True, None
            if faults.api_5xx > 0:
                faults.api_5xx -= 1
                return True, None
            message, faults.graphql_error = faults.graphql_error, None
            return False, message

    def _take_echo_fault(self, authorization: str | None) -> str | None:
        """The Authorization header cut as `faults.graphql_error_echoing_auth` says, once; else None."""
        with self._lock:
            keep = self.faults.graphql_error_echoing_auth
            if keep <= 0 or authorization is None:
                return None
            self.faults.graphql_error_echoing_auth = 0
        token, _, secret_key = authorization.partition("$")
        return f"{token}${secret_key[:keep]}"

    def _answer_graphql(
        self, raw_body: bytes, authorization: str | None
    ) -> tuple[int, dict[str, Any] | None]:
        """Status and JSON payload for one GraphQL POST; payload None means a bare 503."""
        try:
            query, variables = _parse_body(raw_body)
        except ValueError:
            self._record("graphql <invalid body>")
            return HTTPStatus.BAD_REQUEST, _errors('Expected a JSON body {"query", "variables"}')
        root = _root_fields(query)
        self._record(f"graphql {root}")
        unavailable, injected_error = self._take_api_fault()
        if unavailable:
            return HTTPStatus.SERVICE_UNAVAILABLE, None
        if injected_error is not None:
            return HTTPStatus.OK, _errors(injected_error)
        if root == "submissions" and self.faults.submissions_status is not None:
            return self.faults.submissions_status, None
        echoed = self._take_echo_fault(authorization)
        if echoed is not None:
            return HTTPStatus.OK, _errors(
                f"invalid token in header Authorization: {echoed} "
                f"(received Authorization={quote(echoed, safe='')})"
            )
        result = graphql_sync(
            _SCHEMA,
            query,
            root_value=self._root,
            context_value=authorization,
            variable_values=variables,
            field_resolver=_resolve_field,
        )
        if root == "create_submission":
            # After the submission exists: the client's view and Numerai's differ from here.
            time.sleep(self.faults.create_submission_delay_seconds)
            if self.faults.create_submission_status is not None:
                return self.faults.create_submission_status, None
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        return HTTPStatus.OK, payload

    def _dataset_path(self, name: str) -> Path | None:
        with self._lock:
            return self.datasets.get(name)

    def _store_upload(self, upload_id: str, body: bytes) -> int:
        """Keep a presigned PUT's bytes; returns the HTTP status to answer."""
        self._record(f"PUT {UPLOADS_PATH}{upload_id}")
        with self._lock:
            if self.faults.put_status is not None:
                return self.faults.put_status
            upload = self._uploads.get(upload_id)
            if upload is None:
                return HTTPStatus.NOT_FOUND
            if _now() >= upload.expires_at:
                return HTTPStatus.FORBIDDEN
            upload.body = body
            return HTTPStatus.OK

    # --- GraphQL resolvers -----------------------------------------------------------

    def _require_auth(self, info: GraphQLResolveInfo, scope: str | None = None) -> None:
        if info.context != f"Token {self.public_id}${self.secret_key}":
            raise GraphQLError(AUTH_ERROR)
        if scope is not None and scope not in self.key_scopes:
            raise GraphQLError(SCOPE_ERROR.format(scope=scope))

    def _model_id(self, requested: str | None) -> str:
        """The account's model `requested`; None is accepted only for one-model accounts."""
        with self._lock:
            ids = list(self.models.values())
        if requested is None:
            if len(ids) == 1:
                return ids[0]
            raise GraphQLError("modelId is required: this account has more than one model")
        if requested not in ids:
            raise GraphQLError(f"Model {requested} does not exist or is not yours")
        return requested

    def _model_name(self, model_id: str) -> str:
        with self._lock:
            return next(name for name, id_ in self.models.items() if id_ == model_id)

    def _resolve_rounds(self, _info: GraphQLResolveInfo, **args: Any) -> list[dict[str, Any]]:
        _check_tournament(args.get("tournament"))
        with self._lock:
            current = self.round
        # number 0 is Numerai's alias for the current round.
        if args.get("number") not in (None, 0, current.number):
            return []
        if args.get("status") not in (None, current.status(_now())):
            return []
        return [_round_payload(current)]

    def _resolve_list_datasets(self, _info: GraphQLResolveInfo, **args: Any) -> list[str]:
        _check_tournament(args.get("tournament"))
        with self._lock:
            return sorted(self.datasets)

    def _resolve_dataset(self, _info: GraphQLResolveInfo, **args: Any) -> str:
        _check_tournament(args.get("tournament"))
        filename = args["filename"]
        if self._dataset_path(filename) is None:
            raise GraphQLError(f"Dataset not found: {filename}")
        return f"{self.url}{FILES_PATH}{quote(filename)}?expires={self._expiry().timestamp():.3f}"

    def _resolve_account(self, info: GraphQLResolveInfo) -> dict[str, Any]:
        self._require_auth(info)
        with self._lock:
            models = [
                {"id": id_, "name": name, "tournament": CLASSIC_TOURNAMENT}
                for name, id_ in self.models.items()
            ]
            token = {
                "name": "sandbox",
                "public_id": self.public_id,
                "scopes": list(self.key_scopes),
            }
        return {"models": models, "apiTokens": [token]}

    def _expiry(self) -> datetime:
        return _now() + timedelta(seconds=self.presigned_url_seconds)

    def _resolve_upload_auth(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, str]:
        self._require_auth(info, "upload_submission")
        _check_tournament(args["tournament"])
        model_id = self._model_id(args.get("modelId"))
        stored_name = _stored_name(args["filename"])
        upload_id = str(uuid.uuid4())
        with self._lock:
            self._uploads[upload_id] = _Upload(stored_name, model_id, self._expiry())
        return {"filename": stored_name, "url": f"{self.url}{UPLOADS_PATH}{upload_id}"}

    def _resolve_create_submission(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, str]:
        self._require_auth(info, "upload_submission")
        _check_tournament(args["tournament"])
        if self.faults.create_submission_error is not None:
            raise GraphQLError(self.faults.create_submission_error)
        model_id = self._model_id(args.get("modelId"))
        filename = args["filename"]
        with self._lock:
            upload = next((u for u in self._uploads.values() if u.filename == filename), None)
            if upload is None or upload.body is None or upload.model_id != model_id:
                raise GraphQLError(
                    f"Could not find the uploaded file {filename} for model {model_id}: "
                    "PUT it to the URL from submission_upload_auth first"
                )
            now = _now()
            # After the staking close, Numerai queues the submission into the next round
            # (forum "Introducing queued submissions"): it counts for that round.
            counts_for = self.round.number + (1 if now >= self.round.close_staking_time else 0)
            submission = SandboxSubmission(
                id=str(uuid.uuid4()),
                model_id=model_id,
                model_name=self._model_name(model_id),
                round=counts_for,
                filename=filename,
                csv=upload.body,
                inserted_at=now,
                trigger_id=args.get("triggerId"),
            )
            self._submissions.append(submission)
        return self._submission_payload(submission)

    def _resolve_set_webhook(self, info: GraphQLResolveInfo, **args: Any) -> str:
        self._require_auth(info)
        model_id = self._model_id(args["modelId"])
        with self._lock:
            if args.get("newSubmissionWebhook"):
                self._webhooks[model_id] = args["newSubmissionWebhook"]
            else:  # null or "" clears it, as numerapi's default of None does
                self._webhooks.pop(model_id, None)
        return "true"

    def _resolve_trigger_webhook(self, info: GraphQLResolveInfo, **args: Any) -> str:
        """numerai-cli's `node test` call: Numerai calls the model's webhook; the answer is the trigger id."""
        self._require_auth(info)
        model_id = self._model_id(args["modelId"])
        with self._lock:
            url = self._webhooks.get(model_id)
            number = self.round.number
        if url is None:  # Numerai's wording for this is not published: an assumption
            raise GraphQLError(f"Model {model_id} has no submission webhook")
        return self._start_call(model_id, url, number, is_test=True)

    def _resolve_submissions(self, info: GraphQLResolveInfo, **args: Any) -> list[dict[str, Any]]:
        self._require_auth(info, "read_submission_info")
        requested = args.get("modelId")
        if requested is not None:
            self._model_id(requested)
        return self._listed(requested)

    def _resolve_model(self, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        """numerapi's get_submission_filenames asks `model(modelId) { submissions { ... } }`."""
        self._require_auth(info)
        model_id = self._model_id(args.get("modelId"))
        return {
            "id": model_id,
            "name": self._model_name(model_id),
            "tournament": CLASSIC_TOURNAMENT,
            "submissions": self._listed(model_id),
        }

    def _listed(self, model_id: str | None) -> list[dict[str, Any]]:
        if self.faults.hide_submissions:
            return []
        listed_before = _now() - timedelta(seconds=self.faults.list_lag_seconds)
        return [
            self._submission_payload(s)
            for s in self.submissions
            if (model_id is None or s.model_id == model_id) and s.inserted_at <= listed_before
        ]

    def _submission_payload(self, submission: SandboxSubmission) -> dict[str, Any]:
        # The latest of a model's submissions for a round is the one Numerai uses ("selected").
        latest = max(
            (
                s
                for s in self.submissions
                if s.model_id == submission.model_id and s.round == submission.round
            ),
            key=lambda s: s.inserted_at,
            default=submission,
        )
        return {
            "id": submission.id,
            "filename": submission.filename,
            "insertedAt": _iso(submission.inserted_at),
            "round": self._round_of(submission.round),
            "triggerId": submission.trigger_id,
            "selected": latest.id == submission.id,
        }

    def _round_of(self, number: int) -> dict[str, Any]:
        """A round's payload; a round not yet opened (a queued submission's) has only its number."""
        with self._lock:
            known = self.round if self.round.number == number else self._past_rounds.get(number)
        if known is None:
            return {"number": number, "tournament": CLASSIC_TOURNAMENT}
        return _round_payload(known)


def _resolve_field(parent: Any, info: GraphQLResolveInfo, /, **args: Any) -> Any:
    """graphql-core's default resolver, with `parent` positional-only.

    numerapi's create_submission sends an argument named ``source``, which clashes with
    the ``source`` parameter of graphql-core's ``default_field_resolver``.
    """
    value = (
        parent.get(info.field_name)
        if isinstance(parent, Mapping)
        else getattr(parent, info.field_name, None)
    )
    return value(info, **args) if callable(value) else value


def _parse_body(raw_body: bytes) -> tuple[str, dict[str, Any] | None]:
    """(query, variables) from a GraphQL POST body; ValueError if it has another shape."""
    body = json.loads(raw_body)
    if not isinstance(body, dict):
        raise ValueError("the body is not a JSON object")  # noqa: TRY004 - answered 400 as any bad body
    query, variables = body.get("query"), body.get("variables")
    if not isinstance(query, str) or not isinstance(variables, (dict, type(None))):
        raise ValueError("query must be a string and variables an object or null")  # noqa: TRY004 - as above
    return query, variables


def _errors(message: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message}]}


def _check_tournament(tournament: int | None) -> None:
    if tournament not in (None, CLASSIC_TOURNAMENT):
        raise GraphQLError(
            f"Tournament {tournament} is not served by the sandbox (only Classic, "
            f"{CLASSIC_TOURNAMENT})"
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _round_payload(round_: SandboxRound) -> dict[str, Any]:
    # Fields the sandbox has no meaningful value for are left out and resolve to null.
    return {
        "id": round_.id,
        "tournament": CLASSIC_TOURNAMENT,
        "number": round_.number,
        "openTime": _iso(round_.open_time),
        "closeTime": _iso(round_.close_time),
        "closeStakingTime": _iso(round_.close_staking_time),
        "resolvedGeneral": False,
        "resolvedStaking": False,
        "dataDatestamp": int(round_.open_time.strftime("%Y%m%d")),
        "roundScoreConfigs": [],
    }


def _expired(expires: str) -> bool:
    """Whether a presigned URL's `expires` (seconds since the epoch) has passed; an unreadable one has."""
    try:
        return _now().timestamp() >= float(expires)
    except ValueError:
        return True


def _stored_name(uploaded: str) -> str:
    """The name Numerai gives an upload: its stem, a dash and ten random letters.

    `predictions-pPbLKSHGiR.csv` in numerapi's tests, `model57-dMpHpYMPIUAF.csv` in numerapi's
    get_submission_filenames docstring.
    """
    stem, dot, suffix = uploaded.rpartition(".")
    if not dot:
        stem, suffix = uploaded, "csv"
    tag = "".join(secrets.choice(_FILENAME_LETTERS) for _ in range(10))
    return f"{stem}-{tag}.{suffix}"


def _root_fields(query: str) -> str:
    """The root field names of a query, for the request log."""
    try:
        document = parse(query)
    except GraphQLError:
        return "<unparseable>"
    return ",".join(
        selection.name.value
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
        for selection in definition.selection_set.selections
        if isinstance(selection, FieldNode)
    )


def _range_start(header: str | None, size: int) -> int:
    """The offset of a ``bytes=N-`` range (the only form the app and numerapi send); 0 otherwise.

    Other forms are answered with the whole file, which HTTP allows.
    """
    if header is None or not header.startswith("bytes=") or not header.endswith("-"):
        return 0
    try:
        start = int(header[len("bytes=") : -1])
    except ValueError:
        return 0
    return start if 0 < start < size else 0


def _copy(source: BinaryIO, target: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = source.read(min(count, _COPY_CHUNK_BYTES))
        if not chunk:
            return
        target.write(chunk)
        count -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, sandbox: NumeraiSandbox) -> None:
        super().__init__((HOST, port), _Handler)
        self.sandbox = sandbox


class _Handler(BaseHTTPRequestHandler):
    """Routes: POST / (GraphQL), GET /files/<dataset>, PUT /uploads/<upload id>."""

    server: _Server

    def do_POST(self) -> None:
        body = self._read_body()
        self.server.sandbox._pause()
        if urlsplit(self.path).path != "/":
            self.server.sandbox._record(f"POST {self.path}")
            self._send(HTTPStatus.NOT_FOUND)
            return
        status, payload = self.server.sandbox._answer_graphql(
            body, self.headers.get("Authorization")
        )
        if payload is None:
            self._send(status)
        else:
            self._send_graphql(status, json.dumps(payload).encode())

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        sandbox._pause()
        url = urlsplit(self.path)
        path = url.path
        sandbox._record(f"GET {unquote(path)}")
        if not path.startswith(FILES_PATH):
            self._send(HTTPStatus.NOT_FOUND)
            return
        if _expired(parse_qs(url.query).get("expires", ["0"])[0]):
            self._send(HTTPStatus.FORBIDDEN, EXPIRED_XML, "application/xml")
            return
        if sandbox.faults.download_status is not None:
            self._send(sandbox.faults.download_status)
            return
        dataset = sandbox._dataset_path(unquote(path[len(FILES_PATH) :]))
        if dataset is None:
            self._send(HTTPStatus.NOT_FOUND)
            return
        self._send_file(dataset, sandbox.faults)

    def do_PUT(self) -> None:
        body = self._read_body()
        self.server.sandbox._pause()
        path = urlsplit(self.path).path
        if not path.startswith(UPLOADS_PATH):
            self._send(HTTPStatus.NOT_FOUND)
            return
        status = self.server.sandbox._store_upload(path[len(UPLOADS_PATH) :], body)
        if status == HTTPStatus.FORBIDDEN:
            self._send(status, EXPIRED_XML, "application/xml")
        else:
            self._send(status)

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("the client left before its answer (%s %s)", self.command, self.path)

    def _send_graphql(self, status: int, body: bytes) -> None:
        faults = self.server.sandbox.faults
        body = body.ljust(faults.pad_graphql_bytes)  # JSON allows trailing spaces
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if not faults.graphql_without_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("the client hung up on %s", self.path)
            return
        self._write_quietly(body, faults.trickle_graphql_seconds)

    def _write_quietly(self, body: bytes, seconds: float) -> None:
        """Write `body`, spread over `seconds`; stop quietly if the client hangs up.

        Clients under test hang up on purpose (too slow, too big); a traceback from the
        server thread for each of those would only bury the test's own output.
        """
        pieces = max(1, min(len(body), int(seconds / _TRICKLE_INTERVAL_SECONDS)))
        cuts = [len(body) * index // pieces for index in range(pieces + 1)]
        try:
            for start, end in itertools.pairwise(cuts):
                time.sleep(seconds / pieces)
                self.wfile.write(body[start:end])
        except (BrokenPipeError, ConnectionResetError):
            log.debug("the client hung up on %s", self.path)

    def _send_file(self, path: Path, faults: SandboxFaults) -> None:
        size = path.stat().st_size
        start = 0 if faults.ignore_range else _range_start(self.headers.get("Range"), size)
        length = size - start
        self.send_response(HTTPStatus.PARTIAL_CONTENT if start else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        # A truncated answer still announced the full length, so the client sees the
        # connection close early, as with a dropped transfer.
        count = length // 2 if faults.truncate_download else length
        with path.open("rb") as source:
            source.seek(start)
            if faults.trickle_download_seconds > 0:
                self._write_quietly(source.read(count), faults.trickle_download_seconds)
            else:
                _copy(source, self.wfile, count)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def main(argv: list[str] | None = None) -> int:
    """Serve a directory of dataset files until interrupted; prints the URL on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="folder of dataset files")
    parser.add_argument("--version", default="v5.3", help="dataset version prefix (v5.3)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    sandbox = NumeraiSandbox(port=args.port)
    sandbox.add_dataset_dir(args.version, args.data_dir)
    with sandbox:
        print(sandbox.url, flush=True)
        log.info("credentials: public_id=%s secret_key=%s", *sandbox.credentials)
        log.info("models: %s; datasets: %s", sandbox.models, sorted(sandbox.datasets))
        log.info("set numerapi.base_api.API_TOURNAMENT_URL = %r; Ctrl-C stops", sandbox.url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            log.info("stopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
