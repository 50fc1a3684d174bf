"""Redaction: no secret, whole, in part or encoded, leaves the process in a log record or a report.

One registry of secret values serves every log record (through the record
factory, so before any handler sees it) and every run report. A text is
redacted by masking each stretch of it that matches a fragment of at least
MIN_FRAGMENT characters of a secret, or of the secret as it appears when
URL-encoded, JSON-escaped or base64-encoded: error texts from libraries and
servers echo credentials in all these forms, and cut off wherever they like.

The registry is the one piece of process-wide state here, on purpose: log
records are made by every library, on every thread, long before and long after
a run knows its settings, and all of them must be redacted against the same
secrets. It only ever grows (a secret once seen stays masked).

Stdlib only: `shared` installs this on import, which the Functions host does
at every cold start.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

# Eight characters: a real key is long and random (Numerai's secret key 64
# characters, its public id 32, a storage account key 88, a SAS signature 43),
# so eight of them never turn up in ordinary text by chance (36^8 ≈ 3·10^12),
# while fewer would start masking words, dates and numbers. A leaked fragment
# shorter than this leaves nearly all of a key unknown. A value shorter than
# this is no real key, and is not registered: it could not be told from a word.
MIN_FRAGMENT = 8
MASK = "***"
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
# The settings that hold secrets; of the connection string only its secret parts count.
SECRET_SETTINGS = ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY")
CONNECTION_STRING_SETTING = "MODELS_STORAGE_CONNECTION_STRING"

_ACCOUNT_KEY = re.compile(r"(?i)(?:^|;)\s*AccountKey=([^;]+)")
# The signature of a SAS, wherever it sits: SharedAccessSignature=…&sig=… or an endpoint's query.
_SAS_SIGNATURE = re.compile(r"(?i)(?:^|[?&;=])sig=([^&;\s]+)")
_SHARED_ACCESS_SIGNATURE = re.compile(r"(?i)(?:^|;)\s*SharedAccessSignature=([^;]+)")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


class SecretRegistry:
    """Secret values, kept as the set of their MIN_FRAGMENT-character pieces in every encoding.

    Redacting a text looks up each of its windows of MIN_FRAGMENT characters
    in that set: linear in the text's length, whatever the number of secrets.
    """

    def __init__(self) -> None:
        self._pieces: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def register(self, *values: str | None) -> None:
        """Add secret values; empty ones and ones shorter than MIN_FRAGMENT are ignored."""
        pieces = {
            piece
            for value in values
            if value and len(value) >= MIN_FRAGMENT
            for form in _encoded_forms(value)
            for piece in _windows(form)
        }
        with self._lock:  # readers keep using the old set until the new one is whole
            self._pieces = self._pieces | pieces

    def redact(self, text: str) -> str:
        """`text` with every stretch that matches a piece of a secret replaced by MASK."""
        pieces = self._pieces
        if not pieces or len(text) < MIN_FRAGMENT:
            return text
        kept: list[str] = []
        copied = 0  # text[:copied] is already in `kept`
        masked_until = -1  # end of the stretch being masked, -1 when none
        for start in range(len(text) - MIN_FRAGMENT + 1):
            if text[start : start + MIN_FRAGMENT] not in pieces:
                continue
            if start > masked_until:
                if masked_until >= 0:
                    copied = masked_until
                kept += (text[copied:start], MASK)
            masked_until = start + MIN_FRAGMENT
        if masked_until < 0:
            return text
        kept.append(text[masked_until:])
        return "".join(kept)


def _encoded_forms(secret: str) -> set[str]:
    """The secret as error texts carry it: plain, URL-encoded, JSON-escaped and base64."""
    urls = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    # Some servers write percent escapes in lower case.
    urls |= {_PERCENT_ESCAPE.sub(lambda m: m.group().lower(), url) for url in urls}
    escaped = json.dumps(secret)[1:-1]
    forms = {secret, *urls, escaped, escaped.replace("/", "\\/")}
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.update(_base64_cores(raw, encode))
    return forms


def _base64_cores(raw: bytes, encode: Callable[[bytes], bytes]) -> Iterator[str]:
    """The characters of base64 that depend on the secret alone, at each of the three byte alignments.

    Within a longer encoded text the secret starts at any offset modulo 3; the
    characters it shares with its neighbours differ from one text to the next
    and are left out.
    """
    for offset in range(3):
        encoded = encode(bytes(offset) + raw).decode()
        first = -(-8 * offset // 6)  # the first character with no bit of the prefix
        last = 8 * (offset + len(raw)) // 6  # past the last character with no bit of what follows
        yield encoded[first:last]


def _windows(text: str) -> Iterator[str]:
    return (text[i : i + MIN_FRAGMENT] for i in range(len(text) - MIN_FRAGMENT + 1))


def connection_string_secrets(connection_string: str | None) -> tuple[str, ...]:
    """The secret parts of a storage connection string: its AccountKey and SAS signature.

    The rest (account name, endpoints, container URLs) is not secret and must
    stay readable in the errors that name it. A SharedAccessSignature without a
    `sig=` is kept whole, since nothing says which part of it is the secret.
    """
    if not connection_string:
        return ()
    found = _ACCOUNT_KEY.findall(connection_string)
    signatures = _SAS_SIGNATURE.findall(connection_string)
    found += signatures + [unquote(sig) for sig in signatures]
    if not signatures:
        found += _SHARED_ACCESS_SIGNATURE.findall(connection_string)
    return tuple(dict.fromkeys(value.strip() for value in found if value.strip()))


def environment_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets among the settings in `environ` (an unresolved Key Vault reference is none)."""
    values = [environ.get(name, "").strip() for name in SECRET_SETTINGS]
    values += connection_string_secrets(environ.get(CONNECTION_STRING_SETTING))
    return tuple(v for v in values if v and not v.startswith(KEY_VAULT_REFERENCE))


class RedactingFilter(logging.Filter):
    """Renders a record's message, exception and stack once, redacted; never drops a record.

    The exception is rendered into the message and `exc_info` cleared, so that
    no handler can render the raw exception again: OpenTelemetry's reads
    `exc_info` and ignores `exc_text`, and would otherwise both leak the
    message and drop the redacted traceback.
    """

    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__()
        self._registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        message = _message(record)
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
            message = f"{message}\n{trace}" if message[-1:] != "\n" else message + trace
        record.msg, record.args = self._registry.redact(message), None
        record.exc_info, record.exc_text = None, None
        if record.stack_info:
            record.stack_info = self._registry.redact(record.stack_info)
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the message: logging would print both raw
        return f"{record.msg} (logged with arguments that do not fit the message: {record.args!r})"


_registry = SecretRegistry()
_filter = RedactingFilter(_registry)
_installed = False


def register(*values: str | None) -> None:
    """Add secret values to the process's registry (see SecretRegistry.register)."""
    _registry.register(*values)


def redact(text: str) -> str:
    """`text` redacted against every secret this process has registered."""
    return _registry.redact(text)


def install() -> None:
    """Redact every log record made from now on, and register the secrets in the environment.

    Records are redacted as they are made (the record factory), not by a filter
    on a logger or handler: a logger's filters do not see records propagated
    from its children, and the Functions worker and OpenTelemetry add their
    handlers later. Idempotent. Forked worker processes inherit it.
    """
    global _installed
    register(*environment_secrets(os.environ))
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _filter.filter(record)
        return record

    logging.setLogRecordFactory(redacted_record)
    _installed = True
