"""The task queue's messages, and sending them."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.errors import BadTask, QueueError
from shared.manifest import MODEL_NAME_PATTERN
from shared.report import RUN_ID_PATTERN
from shared.settings import Settings
from shared.storage.client import client_options

log = logging.getLogger(__name__)

MODEL = "model"
DEADLINE = "deadline"
# A scheduled run of one model (or, for a URL without one, of every model), started by Numerai's
# webhook call (POST /api/numerai-webhook).
RUN = "run"
# A webhook delivery's id (shared.triggers.webhook makes them "webhook-<12 hex digits>").
DELIVERY_PATTERN = r"webhook-[0-9a-f]{1,32}"
# host.json sits beside shared/ in the app's folder, here and in the deployment package.
HOST_JSON = Path(__file__).resolve().parents[3] / "host.json"
# The host's default, when host.json does not set maxDequeueCount.
DEFAULT_MAX_DEQUEUE_COUNT = 5
# A queue message can stay invisible for at most seven days.
MAX_DELAY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class TaskMessage:
    """One unit of a fanned-out run (a model to predict, or the run's deadline), or a run to start."""

    kind: str  # MODEL, DEADLINE or RUN
    run_id: str  # RUN: the webhook delivery's id; the run it starts makes its own run id
    round_number: int  # RUN: the open round the webhook call was for
    model: str | None = (
        None  # MODEL: its model; RUN: the model the webhook's URL names (None: every model)
    )
    entry_digest: str | None = None  # MODEL only: the manifest entry the plan holds for the model
    # No trigger id: a RUN task takes it from the call's record (RunRecords.webhook_call), so that a
    # message no call of Numerai's made cannot pass one to create_submission.
    waits: int = 0  # RUN only: how often the run found the run lock held and was sent again

    def to_json(self) -> str:
        """The message body."""
        return json.dumps(asdict(self))

    def fault(self) -> str | None:
        """What makes this no message of ours (each field names a blob or a model), or None."""
        id_pattern = DELIVERY_PATTERN if self.kind == RUN else RUN_ID_PATTERN
        checks = (
            (self.kind in (MODEL, DEADLINE, RUN), "'kind' is none of model, deadline, run"),
            (_matches(id_pattern, self.run_id), f"'run_id' is no {self.kind} id"),
            (_whole(self.round_number), "'round_number' is not a round number"),
            (self.model is None or _matches(MODEL_NAME_PATTERN, self.model), "bad 'model'"),
            (
                self.kind == RUN or (self.kind == MODEL) == (self.model is not None),
                "a model message names its model, a deadline message none",
            ),
            (
                self.entry_digest is None or _matches(r"[0-9a-f]{1,64}", self.entry_digest),
                "bad 'entry_digest'",
            ),
            (_whole(self.waits), "bad 'waits'"),
        )
        return next((why for ok, why in checks if not ok), None)

    @classmethod
    def from_body(cls, body: bytes | str) -> TaskMessage:
        """Parse a message body; BadTask if it is not a task message."""
        try:
            raw = json.loads(body)
            message = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise BadTask(f"not a task message ({exc}): {str(body)[:200]!r}") from None
        why = message.fault()
        if why:
            raise BadTask(f"not a task message ({why}): {str(body)[:200]!r}")
        return message


class TaskQueue:
    """Sends to the task queue, in the storage the queue trigger listens to (AzureWebJobsStorage)."""

    def __init__(self, settings: Settings) -> None:
        """Connect as the queue trigger does: a connection string locally, the managed identity in Azure."""
        self._name = settings.task_queue
        # Base64, as the host's queue trigger expects by default (host.json messageEncoding).
        options = {
            "message_encode_policy": TextBase64EncodePolicy(),
            **client_options(settings.storage_timeout_seconds),
        }
        if settings.host_storage_connection_string:
            try:
                self._client = QueueClient.from_connection_string(
                    settings.host_storage_connection_string, self._name, **options
                )
            except ValueError:
                raise QueueError(
                    "AzureWebJobsStorage is not a valid storage connection string"
                ) from None
        elif settings.host_queue_service_uri:
            from azure.identity import DefaultAzureCredential  # heavy import, only needed in Azure

            client_id = settings.host_storage_client_id or settings.managed_identity_client_id
            credential = DefaultAzureCredential(managed_identity_client_id=client_id)
            self._client = QueueClient(
                settings.host_queue_service_uri, self._name, credential=credential, **options
            )
        else:
            raise QueueError(
                "MODEL_EXECUTION=queue needs the host's storage: set AzureWebJobsStorage "
                "(a connection string) or AzureWebJobsStorage__queueServiceUri"
            )

    def send(self, message: TaskMessage, delay_seconds: float = 0) -> tuple[str, str]:
        """Put a message on the queue, invisible for `delay_seconds`; returns its (id, pop receipt)."""
        delay = min(max(int(delay_seconds), 0), MAX_DELAY_SECONDS)
        try:
            try:
                sent = self._client.send_message(
                    message.to_json(), visibility_timeout=delay or None
                )
            except AzureError as exc:
                if getattr(exc, "error_code", None) != "QueueNotFound":
                    raise
                # Infra creates the queues in Azure; Azurite and a fresh account need it made.
                with contextlib.suppress(ResourceExistsError):  # by a sender at the same moment
                    self._client.create_queue()
                sent = self._client.send_message(
                    message.to_json(), visibility_timeout=delay or None
                )
        except AzureError as exc:
            raise QueueError(
                f"could not send to the task queue '{self._name}': {_first_line(exc)}"
            ) from exc
        return sent.id, sent.pop_receipt

    def delete(self, message_id: str, pop_receipt: str) -> None:
        """Delete a message that was sent delayed and is no longer needed (best effort: logged, not raised)."""
        try:
            self._client.delete_message(message_id, pop_receipt)
        except AzureError as exc:
            log.info(
                "the delayed message %s stays on '%s' (it will find its run finished): %s",
                message_id,
                self._name,
                _first_line(exc),
            )


def _matches(pattern: str, value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _whole(value: object) -> bool:
    return type(value) is int and value >= 0


def max_dequeue_count(host_json: Path = HOST_JSON) -> int:
    """host.json's extensions.queues.maxDequeueCount: how many deliveries a message gets before poison."""
    try:
        queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
        return int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_MAX_DEQUEUE_COUNT


def _first_line(exc: AzureError) -> str:
    lines = str(exc.message or type(exc).__name__).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
