"""App settings, read once per run from the environment (Function App settings, or
`local.settings.json` under `func start`, or the shell for `python -m shared run`).

Every setting the code reads is declared here with its default; the README's
settings table, `local.settings.json.example` and `infra/` list the same names.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from shared.errors import SettingsError
from shared.limits import (
    WorkerLimits,
    default_disk_limit_mb,
    default_memory_limit_mb,
    free_disk_bytes,
)
from shared.redaction import KEY_VAULT_REFERENCE, connection_string_secrets, register
from shared.report import Execution

# Rows per batch: enough to keep the frameworks busy, small beside any model.
DEFAULT_BATCH_ROWS = 2000


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know about its environment."""

    numerai_public_id: str
    numerai_secret_key: str
    data_version: str = "v5.3"
    numerai_api_url: str | None = None
    numerai_timeout_seconds: float = 60.0
    # For all tries of one file: a run downloads at most three, so even when each takes
    # all of it, half of the Functions timeout (30 min, host.json) is left for the models.
    numerai_download_timeout_seconds: float = 300.0
    numerai_retries: int = 4
    numerai_retry_delay_seconds: float = 2.0
    force_resubmit: bool = False
    # After closeStakingTime a submission is scored but not staked: only on purpose.
    submit_late: bool = False
    storage_connection_string: str | None = None
    storage_account_url: str | None = None
    managed_identity_client_id: str | None = None
    storage_timeout_seconds: float = 30.0
    models_container: str = "models"
    results_container: str = "results"
    manifest_blob: str = "models.json"
    batch_rows: int = DEFAULT_BATCH_ROWS
    model_time_limit_seconds: float = 600.0
    # Below host.json's functionTimeout (30 min), leaving time to save the report and free the lock.
    run_deadline_seconds: float = 1500.0
    model_memory_limit_mb: float | None = None  # None: a share of the instance's memory
    model_disk_limit_mb: float | None = None  # None: a share of WORK_DIR's free disk
    max_parallel_models: int = 1
    work_dir: Path = Path(tempfile.gettempdir()) / "numerai-submitter"
    # The column of live_benchmark_models.parquet each submission is compared with (the benchmark check);
    # None: each data version's main benchmark (shared/data/benchmarks.py), as v5.3 has only v53_* columns.
    benchmark_model: str | None = None
    model_execution: Execution = Execution.LOCAL
    task_queue: str = (
        "model-tasks"  # its poison queue is "<task_queue>-poison", as the host names it
    )
    # The host's own storage, where the task queues live: the queue trigger reads them through the
    # same settings (a connection string locally; in Azure the queue endpoint and the identity).
    host_storage_connection_string: str | None = None
    host_queue_service_uri: str | None = None
    host_storage_client_id: str | None = None

    def __repr__(self) -> str:
        # Settings travel into logs and tracebacks; the secrets must not.
        return f"Settings(data_version={self.data_version!r}, models_container={self.models_container!r}, ...)"

    def worker_limits(self, run_ends_at: float | None = None) -> WorkerLimits:
        """What each model's worker process may use; none outlives `run_ends_at` (time.monotonic()).

        The default disk limit is read now: called as the workers start, it shares out the
        space the round's downloads and model files left.
        """
        memory = self.model_memory_limit_mb or default_memory_limit_mb(self.max_parallel_models)
        disk = self.model_disk_limit_mb or default_disk_limit_mb(
            free_disk_bytes(self.work_dir), self.max_parallel_models
        )
        return WorkerLimits(
            seconds=self.model_time_limit_seconds,
            memory_mb=memory,
            run_ends_at=run_ends_at,
            disk_mb=disk,
            disk_default=self.model_disk_limit_mb is None,
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values, for redacting them from anything that leaves the process.

        Of the connection string only its key or signature: the account name and
        endpoints are what its errors need to name.
        """
        values = (
            self.numerai_public_id,
            self.numerai_secret_key,
            *connection_string_secrets(self.storage_connection_string),
            *connection_string_secrets(self.host_storage_connection_string),
        )
        return tuple(v for v in values if v)


def load_settings(
    environ: Mapping[str, str] | None = None, *, needs_account: bool = True
) -> Settings:
    """Read and check the settings; raise one SettingsError naming every setting at fault.

    Every setting is read before any error is raised, so that a participant fixes them all at
    once rather than one run at a time. With `needs_account` False (downloading the round's
    public files), neither the Numerai keys nor the storage account are required.
    """
    env = _Reader(os.environ if environ is None else environ)
    defaults = Settings("", "")
    settings = Settings(
        numerai_public_id=env.required("NUMERAI_PUBLIC_ID", needs_account),
        numerai_secret_key=env.required("NUMERAI_SECRET_KEY", needs_account),
        data_version=env.text("NUMERAI_DATA_VERSION", defaults.data_version),
        numerai_api_url=env.optional("NUMERAI_API_URL"),
        numerai_timeout_seconds=env.number(
            "NUMERAI_TIMEOUT_SECONDS", defaults.numerai_timeout_seconds
        ),
        numerai_download_timeout_seconds=env.number(
            "NUMERAI_DOWNLOAD_TIMEOUT_SECONDS", defaults.numerai_download_timeout_seconds
        ),
        numerai_retries=int(env.number("NUMERAI_RETRIES", defaults.numerai_retries, minimum=1)),
        numerai_retry_delay_seconds=env.number(
            "NUMERAI_RETRY_DELAY_SECONDS", defaults.numerai_retry_delay_seconds, minimum=0
        ),
        force_resubmit=env.flag("NUMERAI_FORCE_RESUBMIT"),
        submit_late=env.flag("SUBMIT_LATE"),
        storage_connection_string=env.optional("MODELS_STORAGE_CONNECTION_STRING"),
        storage_account_url=env.optional("MODELS_STORAGE_ACCOUNT_URL"),
        managed_identity_client_id=env.optional("AZURE_CLIENT_ID"),
        storage_timeout_seconds=env.number(
            "STORAGE_TIMEOUT_SECONDS", defaults.storage_timeout_seconds
        ),
        models_container=env.text("MODELS_CONTAINER", defaults.models_container),
        results_container=env.text("RESULTS_CONTAINER", defaults.results_container),
        manifest_blob=env.text("MANIFEST_BLOB", defaults.manifest_blob),
        batch_rows=int(env.number("BATCH_ROWS", defaults.batch_rows, minimum=1)),
        model_time_limit_seconds=env.number(
            "MODEL_TIME_LIMIT_SECONDS", defaults.model_time_limit_seconds
        ),
        run_deadline_seconds=env.number(
            "RUN_DEADLINE_SECONDS", defaults.run_deadline_seconds, minimum=1
        ),
        model_memory_limit_mb=env.optional_number("MODEL_MEMORY_LIMIT_MB", minimum=64),
        model_disk_limit_mb=env.optional_number("MODEL_DISK_LIMIT_MB", minimum=1),
        max_parallel_models=int(
            env.number("MAX_PARALLEL_MODELS", defaults.max_parallel_models, minimum=1)
        ),
        work_dir=Path(env.text("WORK_DIR", str(defaults.work_dir))),
        benchmark_model=env.optional("BENCHMARK_MODEL"),
        model_execution=env.choice("MODEL_EXECUTION", Execution, defaults.model_execution),
        task_queue=env.queue_name("TASK_QUEUE", defaults.task_queue),
        host_storage_connection_string=env.optional("AzureWebJobsStorage"),
        host_queue_service_uri=env.optional("AzureWebJobsStorage__queueServiceUri"),
        host_storage_client_id=env.optional("AzureWebJobsStorage__clientId"),
    )
    if needs_account:
        env.check_storage(settings)
    env.raise_problems()
    register(*settings.secrets)  # `environ` may hold secrets that os.environ did not
    return settings


STORAGE_SETTINGS = ("MODELS_STORAGE_CONNECTION_STRING", "MODELS_STORAGE_ACCOUNT_URL")


class _Reader:
    """Typed access to string settings, collecting an error that names each setting at fault.

    A setting at fault reads as its default (or empty), so that reading goes on to the next one;
    `raise_problems` then raises them all in one SettingsError.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._problems: dict[str, str] = {}

    def _problem(self, name: str, message: str) -> None:
        self._problems.setdefault(name, message)

    def raise_problems(self) -> None:
        """Raise one SettingsError listing every problem found, if any."""
        if not self._problems:
            return
        problems = list(self._problems.values())
        if len(problems) == 1:
            raise SettingsError(problems[0])
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise SettingsError(f"{len(problems)} settings need fixing:\n{lines}")

    def check_storage(self, settings: Settings) -> None:
        """Exactly one way to reach the models' storage account must be set."""
        connection, account_url = STORAGE_SETTINGS
        if bool(settings.storage_connection_string) == bool(settings.storage_account_url):
            state = "both are set" if settings.storage_connection_string else "neither is set"
            self._problem(
                connection,
                f"set exactly one of {connection} (local development, e.g. Azurite) or "
                f"{account_url} (in Azure, with the managed identity); {state}",
            )

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        if value.startswith(KEY_VAULT_REFERENCE):
            # App Service passes the reference through verbatim when it cannot resolve it.
            self._problem(
                name,
                f"{name} is a Key Vault reference that Azure could not resolve; check that the "
                "secret exists and that the app's identity may read it (Key Vault Secrets User), "
                "and that keyVaultReferenceIdentity names that identity",
            )
            return None
        return value or None

    def required(self, name: str, needed: bool = True) -> str:
        """The setting's value; "" when it is not set and not `needed`."""
        value = self.optional(name)
        if value is None and not needed:
            return ""
        if value is None:
            self._problem(
                name, f"{name} is not set; it is required (see the README's settings table)"
            )
            return ""
        return value

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def number(self, name: str, default: float, minimum: float = 0.001) -> float:
        value = self.optional_number(name, minimum)
        return default if value is None else value

    def optional_number(self, name: str, minimum: float = 0.001) -> float | None:
        raw = self.optional(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            self._problem(name, f"{name} must be a number; it is {raw!r}")
            return None
        if value < minimum:
            self._problem(name, f"{name} must be at least {minimum:g}; it is {raw!r}")
            return None
        return value

    def choice(self, name: str, choices: type[Enum], default: Enum) -> Any:
        raw = (self.optional(name) or default.value).lower()
        allowed = [member.value for member in choices]
        if raw not in allowed:
            self._problem(name, f"{name} must be one of {', '.join(allowed)}; it is {raw!r}")
            return default
        return choices(raw)

    def queue_name(self, name: str, default: str) -> str:
        value = self.text(name, default)
        # Storage's rule for queue names (3 to 63 characters); 49 leaves room for the host's
        # "-poison" suffix twice, since poison_task's own poison queue is "<name>-poison-poison".
        if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,47}[a-z0-9]", value):
            self._problem(
                name,
                f"{name} must be a Storage queue name of 3 to 49 lowercase letters, digits "
                f"and single hyphens, starting and ending with a letter or digit; it is {value!r}",
            )
            return default
        return value

    def flag(self, name: str) -> bool:
        raw = (self.optional(name) or "false").lower()
        if raw not in {"true", "false", "1", "0", "yes", "no"}:
            self._problem(name, f"{name} must be true or false; it is {raw!r}")
            return False
        return raw in {"true", "1", "yes"}
