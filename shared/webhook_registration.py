"""Numerai's submission webhook: one URL per model the manifest submits, the model named in it.

Numerai calls a model's webhook when a round opens (POST /api/numerai-webhook, see
shared/triggers/webhook.py) with a body that names no model, so each model's URL is the app's
with `model=<name>` added to its query. `python -m shared webhooks --set URL` / `--clear` calls this.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from shared.errors import AppError, SettingsError
from shared.manifest import parse_manifest
from shared.numerai_client import NumeraiClient
from shared.redaction import register
from shared.settings import Settings
from shared.storage.client import service_client
from shared.storage.models import ModelStore

# The query parameter of a model's URL that names the model (the function key stays in `code`).
MODEL_PARAMETER = "model"
# The query parameter that carries the function key, as the Functions host reads it.
KEY_PARAMETER = "code"


@dataclass(frozen=True)
class WebhookChange:
    """What became of one model's webhook: `done` says what was done, or `error` why not."""

    model: str
    done: str | None = None
    error: str | None = None


def set_webhooks(settings: Settings, url: str | None) -> list[WebhookChange]:
    """Set each model's URL, `url` naming the model (or clear the webhook, for None), for every manifest
    entry with `submit` true.

    Raises AppError when the URL already names a model, or the manifest or the account's models cannot
    be had; a model whose webhook could not be set is its change's error, and the others are still set.
    """
    query = parse_qs(urlsplit(url or "").query, keep_blank_values=True)
    # The function key: Numerai's error texts may quote the URL, and no log line may show it.
    register(*query.get(KEY_PARAMETER, []))
    if MODEL_PARAMETER in query:
        raise SettingsError(
            f"the URL already names a model ('{MODEL_PARAMETER}=' in its query); give the "
            "function's URL with its ?code= only: each model's is made from it"
        )
    models = ModelStore(
        service_client(settings), settings.models_container, settings.work_dir / "model-cache"
    )
    manifest = parse_manifest(
        models.read_text(settings.manifest_blob),
        f"{settings.models_container}/{settings.manifest_blob}",
    )
    numerai = NumeraiClient(settings)
    account = numerai.model_ids()
    return [
        _change(numerai, account, spec.name, url) for spec in manifest.in_order() if spec.submit
    ]


def model_url(url: str, name: str) -> str:
    """The URL Numerai calls for model `name`: the function's, with `model=<name>` added to its query.

    Appended to the text as given, so the function key in `code` stays byte for byte.
    """
    base, _, fragment = url.partition("#")
    separator = "&" if urlsplit(base).query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}{MODEL_PARAMETER}={name}" + (f"#{fragment}" if fragment else "")


def shown(url: str) -> str:
    """The URL without its query, which holds the function key (?code=...)."""
    base, query, _ = url.partition("?")
    return f"{base}?…" if query else base


def _change(
    numerai: NumeraiClient, account: dict[str, str], name: str, url: str | None
) -> WebhookChange:
    verb = "set" if url else "cleared"
    if name not in account:
        return WebhookChange(
            name,
            error=(
                f"model '{name}' is not a Classic model of this Numerai account, so its webhook was not {verb}; "
                f"the account has: {', '.join(sorted(account)) or 'no models'}"
            ),
        )
    try:
        confirmed = numerai.set_submission_webhook(
            account[name], model_url(url, name) if url else None
        )
    except AppError as exc:
        return WebhookChange(name, error=f"model '{name}': the webhook was not {verb}: {exc}")
    if not confirmed:
        return WebhookChange(
            name, error=f"model '{name}': Numerai did not confirm that the webhook was {verb}"
        )
    return WebhookChange(
        name, done=f"model '{name}': webhook {f'set to {shown(url)}' if url else 'cleared'}"
    )
