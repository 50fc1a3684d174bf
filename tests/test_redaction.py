"""Redaction: pieces of secrets, in every encoding, masked in every log record and report."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from shared.redaction import (
    MASK,
    MIN_FRAGMENT,
    SecretRegistry,
    connection_string_secrets,
    environment_secrets,
    register,
)
from shared.report import Mode, ModelReport, ModelStatus, RunReport

REPO = Path(__file__).resolve().parent.parent
# Shaped like a storage account key: base64, with the characters that encodings change.
KEY = "Zm9vYmFy+c2VjcmV0/a2V5IHRoYXQ+aXM/bG9uZw==Q3xY7+/TmL9pWc2Rv"


def registry_of(*values: str) -> SecretRegistry:
    registry = SecretRegistry()
    registry.register(*values)
    return registry


def fresh_secret() -> str:
    """A secret no other test knows: the process's registry is shared and only grows."""
    return "S3CR" + secrets.token_hex(16)


def test_a_piece_of_a_secret_is_masked_wherever_it_starts_and_ends() -> None:
    registry = registry_of(KEY)
    for start, end in [
        (0, len(KEY)),
        (0, MIN_FRAGMENT),
        (17, 26),
        (len(KEY) - MIN_FRAGMENT, len(KEY)),
    ]:
        assert registry.redact(f"before {KEY[start:end]} after") == f"before {MASK} after"
    assert registry.redact(f"{KEY[:30]}, and again:{KEY[10:40]}") == f"{MASK}, and again:{MASK}"


def test_a_piece_shorter_than_the_minimum_is_left() -> None:
    short = KEY[5 : 5 + MIN_FRAGMENT - 1]
    assert registry_of(KEY).redact(f"x {short} y") == f"x {short} y"


def test_values_too_short_to_be_keys_are_not_registered() -> None:
    assert registry_of("secret", "").redact("the secret exists") == "the secret exists"


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: quote(s, safe=""),
        quote,
        quote_plus,
        lambda s: quote(s, safe="").replace("%2F", "%2f").replace("%2B", "%2b"),
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    ],
    ids=["quote", "quote-path", "quote_plus", "quote-lowercase", "json", "json-slash"],
)
def test_url_encoded_and_json_escaped_pieces_are_masked(encode) -> None:
    registry = registry_of(KEY)
    for piece in (KEY, KEY[3:25]):
        assert registry.redact(f"<{encode(piece)}>") == f"<{MASK}>"


@pytest.mark.parametrize(
    "encode", [base64.b64encode, base64.urlsafe_b64encode], ids=["standard", "urlsafe"]
)
@pytest.mark.parametrize("before", [b"", b"u", b"us", b"user:"])
def test_base64_at_every_alignment_is_masked(encode, before: bytes) -> None:
    registry = registry_of(KEY)
    for piece in (KEY, KEY[7:40]):
        encoded = encode(before + piece.encode() + b";end").decode()
        # The characters that carry bits of the piece and of nothing else.
        alone = encoded[-(-8 * len(before) // 6) : 8 * (len(before) + len(piece)) // 6]
        redacted = registry.redact(f"Basic {encoded}")
        assert MASK in redacted and not _holds_a_piece(redacted, alone)


def test_text_without_secrets_is_unchanged() -> None:
    registry = registry_of(KEY, "FAKE-SECRET-KEY-b7e24d90", fresh_secret())
    for text in [
        "",
        "short",
        "model 'demo_onnx': 20 of its 60 features are not in live.parquet of data version v5.3",
        (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        ),
        "2026-11-27T17:14:29+00:00 https://api-tournament.numer.ai/ NUMERAI_SECRET_KEY",
    ]:
        assert registry.redact(text) == text


def test_work_is_linear_in_the_text_and_independent_of_the_number_of_secrets() -> None:
    many = [fresh_secret() for _ in range(50)]
    # Near misses everywhere: what makes a search for each secret in turn slow.
    unit = "".join(secret[: MIN_FRAGMENT - 1] + "#" for secret in many) + many[0]
    one, fifty = registry_of(many[0]), registry_of(*many)
    small, large = _steps(fifty, unit * 10), _steps(fifty, unit * 40)
    assert large <= 4.1 * small
    no_match = unit.replace(many[0], "-")
    assert _steps(one, no_match) == _steps(fifty, no_match)


def _steps(registry: SecretRegistry, text: str) -> int:
    """Python lines executed to redact `text`: a measure of work that, unlike time, does not vary."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += event == "line"
        return trace

    sys.settrace(trace)
    try:
        registry.redact(text)
    finally:
        sys.settrace(None)
    return count


def _holds_a_piece(text: str, secret: str) -> bool:
    return any(secret[i : i + MIN_FRAGMENT] in text for i in range(len(secret) - MIN_FRAGMENT + 1))


def test_the_secret_parts_of_a_connection_string_and_no_more() -> None:
    account = f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={KEY};EndpointSuffix=core.windows.net"
    assert connection_string_secrets(account) == (KEY,)
    sas = (
        "BlobEndpoint=https://acme.blob.core.windows.net/;"
        "SharedAccessSignature=sv=2022-11-02&ss=b&srt=co&sp=rl&se=2026-12-01T00:00:00Z&sig=abc%2Bdef%2F123%3D"
    )
    assert connection_string_secrets(sas) == ("abc%2Bdef%2F123%3D", "abc+def/123=")
    assert connection_string_secrets("UseDevelopmentStorage=true") == ()
    assert connection_string_secrets("SharedAccessSignature=opaque-token-value") == (
        "opaque-token-value",
    )


def test_the_environment_secrets_leave_out_key_vault_references() -> None:
    environ = {
        "NUMERAI_PUBLIC_ID": "PUBLIC-ID-0123456789",
        "NUMERAI_SECRET_KEY": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/k/)",
        "MODELS_STORAGE_CONNECTION_STRING": f"AccountName=acme;AccountKey={KEY}",
        "OTHER": "x" * 20,
    }
    assert environment_secrets(environ) == ("PUBLIC-ID-0123456789", KEY)


@pytest.fixture
def collected() -> logging.Handler:
    """A handler added to a parent logger after redaction was installed, as the Functions worker adds its own."""

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)
            self.lines.append(self.format(record))

    handler = Collect()
    parent = logging.getLogger("redaction_test")
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    yield handler
    parent.removeHandler(handler)


def test_a_record_on_a_child_logger_is_redacted_for_a_handler_added_later(collected) -> None:
    secret = fresh_secret()
    register(secret)
    logging.getLogger("redaction_test.child.grandchild").warning(
        "could not connect with %s (as %r)", secret[2:30], {"header": quote(f"Token x${secret}")}
    )
    assert collected.lines == [
        f"could not connect with {MASK} (as {{'header': 'Token%20x%24{MASK}'}})"
    ]


def test_an_exception_is_rendered_redacted_and_not_kept_for_handlers_to_render_again(
    collected,
) -> None:
    secret = fresh_secret()
    register(secret)
    try:
        try:
            raise KeyError(f"key {secret[:20]}")
        except KeyError as cause:
            raise RuntimeError(f"GraphQL error: Token x${secret}") from cause
    except RuntimeError:
        logging.getLogger("redaction_test.child").exception("the call failed with %s", secret[4:])
    text, record = collected.lines[0], collected.records[0]
    assert text.startswith(f"the call failed with {MASK}\nTraceback (most recent call last):")
    assert (
        f"KeyError: 'key {MASK}'" in text and f"RuntimeError: GraphQL error: Token x${MASK}" in text
    )
    assert not _holds_a_piece(text, secret)
    assert record.exc_info is None and record.exc_text is None and record.args is None


def test_a_stack_and_arguments_that_do_not_fit_are_redacted(collected) -> None:
    secret = fresh_secret()
    register(secret)
    log = logging.getLogger("redaction_test.child")
    log.info("one %s, two %s", secret)  # noqa: PLE1206 - the mistake under test
    record = log.makeRecord(
        log.name,
        logging.INFO,
        __file__,
        1,
        "here",
        (),
        None,
        sinfo=f'Stack (most recent call last):\n  connect("{secret}")',
    )
    assert (
        collected.lines[0]
        == f"one %s, two %s (logged with arguments that do not fit the message: ('{MASK}',))"
    )
    assert record.stack_info == f'Stack (most recent call last):\n  connect("{MASK}")'


def test_secrets_in_the_environment_are_redacted_from_the_first_record() -> None:
    # Before any settings are loaded: importing `shared` is enough.
    key = fresh_secret()
    code = (
        "import logging, shared; logging.basicConfig(format='%(message)s');"
        f"logging.getLogger('azure').warning('request sent with key %s', {key[3:27]!r})"
    )
    env = {**os.environ, "NUMERAI_SECRET_KEY": key, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == f"request sent with key {MASK}\n"


def test_a_report_is_redacted_in_every_text_and_keeps_its_enums() -> None:
    secret = fresh_secret()
    register(secret)
    report = RunReport(
        "run-1",
        Mode.SCHEDULED,
        "2026-11-27T00:00:00+00:00",
        reason=f"failed: {secret[:12]}",
        models=[
            ModelReport(
                "m",
                ModelStatus.FAILED,
                error=f"model 'm': {secret}",
                submission_id=f"id-{secret[5:]}",
            )
        ],
    )
    report.redact()
    assert report.reason == f"failed: {MASK}" and report.model("m").error == f"model 'm': {MASK}"
    assert report.model("m").submission_id == f"id-{MASK}" and report.mode is Mode.SCHEDULED
    assert report.model("m").status is ModelStatus.FAILED and report.run_id == "run-1"
