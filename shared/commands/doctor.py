"""`python -m shared doctor`: everything the next run needs, checked at once, each line saying what to do.

Settings (all problems in one message), the storage account and the manifest, each model file,
each pickle's Python against the deployment's (PYTHON_VERSION), Numerai's answer to the keys and their scopes, every entry to submit among the account's models,
and the timer's next firings against the round's window. Nothing is written or uploaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

from shared.commands.models import model_store
from shared.commands.schedule import DEFAULT_SCHEDULE, SCHEDULE_SETTING, next_firings
from shared.errors import AppError, NumeraiKeysRefused
from shared.formats import FORMAT_LIBRARIES
from shared.formats.pickle_python import built_on, mismatch_advice
from shared.manifest import PICKLE_FORMATS, Manifest, ModelSpec, parse_manifest
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from shared.numerai_client import NumeraiClient, RoundInfo
    from shared.storage.models import ModelStore

log = logging.getLogger(__name__)

# The deployment's Python: azd's PYTHON_VERSION, whose default infra/main.parameters.json gives.
PYTHON_SETTING = "PYTHON_VERSION"
# The formats the deployment package carries (devkit/package.py); unset or "all": every one.
FORMATS_SETTING = "PACKAGE_FORMATS"
DEFAULT_PYTHON = "3.11"
# What uploading needs of a key (numerapi's get_account lists a key's scopes).
UPLOAD_SCOPE = "upload_submission"
FIRINGS_SHOWN = 3


class Verdict(str, Enum):
    """How a check came out: FAIL lines are what would make the next run fail."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's answer."""

    verdict: Verdict
    text: str

    def line(self) -> str:
        """The finding as a line of text."""
        return f"{self.verdict.value:<4}  {self.text}"


def diagnose(environ: Mapping[str, str], now: datetime | None = None) -> list[Finding]:
    """Every check, in the order a run meets them; a check that cannot run says which one failed."""
    try:
        settings = load_settings(environ)
    except AppError as exc:
        return [Finding(Verdict.FAIL, f"settings: {exc}")]
    findings = [Finding(Verdict.OK, "settings: every setting is set and well formed")]
    manifest = _storage(settings, findings, deployment_python(environ))
    if manifest is not None:
        _package_formats(manifest, deployment_formats(environ), findings)
    round_ = _numerai(settings, manifest, findings)
    _schedule(environ, findings, now or datetime.now(UTC), round_)
    return findings


def _storage(settings: Settings, findings: list[Finding], python: int) -> Manifest | None:
    """The manifest, each model file, and each pickle's Python against the deployment's (3.`python`)."""
    source = f"{settings.models_container}/{settings.manifest_blob}"
    try:
        store = model_store(settings)
        current = store.read_text_and_etag(settings.manifest_blob)
        if current is None:
            findings.append(
                Finding(
                    Verdict.FAIL,
                    f"manifest: {source} does not exist; add a model with "
                    "`python -m shared models add FILE`",
                )
            )
            return None
        manifest = parse_manifest(current[0], source)
        findings.append(
            Finding(Verdict.OK, f"storage: {source} read, {len(manifest.models)} entries")
        )
        for spec in manifest.models:
            if spec.file is not None and store.properties(spec.file) is None:
                findings.append(
                    Finding(
                        Verdict.FAIL,
                        f"model '{spec.name}': file '{spec.file}' is not in container "
                        f"'{settings.models_container}'; upload it with `python -m shared models add`",
                    )
                )
            elif spec.format in PICKLE_FORMATS:
                _pickle_python(store, spec, python, findings)
    except AppError as exc:
        findings.append(Finding(Verdict.FAIL, f"storage: {exc}"))
        return None
    return manifest


def deployment_python(environ: Mapping[str, str]) -> int:
    """The minor version of the deployment's Python 3: PYTHON_VERSION as azd has it, else infra's default."""
    text = (environ.get(PYTHON_SETTING) or "").strip() or DEFAULT_PYTHON
    major, _, minor = text.partition(".")
    digits = minor.isascii() and minor.isdigit()
    return int(minor) if major == "3" and digits else int(DEFAULT_PYTHON.split(".")[1])


def deployment_formats(environ: Mapping[str, str]) -> set[str] | None:
    """The formats PACKAGE_FORMATS (as azd has it) puts in the package; None for every one."""
    text = (environ.get(FORMATS_SETTING) or "").strip().lower()
    if text in ("", "all"):
        return None
    return {name.strip() for name in text.split(",") if name.strip()}


def _package_formats(manifest: Manifest, formats: set[str] | None, findings: list[Finding]) -> None:
    """A model whose format the package leaves out fails in every run: said before deploying."""
    if formats is None:
        return
    unknown = sorted(formats - set(FORMAT_LIBRARIES))
    if unknown:
        findings.append(
            Finding(
                Verdict.FAIL,
                f"{FORMATS_SETTING}: {', '.join(unknown)} is not a model format; the formats are "
                f"{', '.join(FORMAT_LIBRARIES)}",
            )
        )
    for spec in manifest.models:
        if spec.format is not None and spec.format.value not in formats:
            library = FORMAT_LIBRARIES[spec.format.value][1]
            findings.append(
                Finding(
                    Verdict.FAIL,
                    f"model '{spec.name}': it is {spec.format.value}, and {FORMATS_SETTING}="
                    f"{','.join(sorted(formats))} builds the deployment without {library}: add "
                    f"{spec.format.value} to {FORMATS_SETTING} and deploy again",
                )
            )


def _pickle_python(
    store: ModelStore, spec: ModelSpec, python: int, findings: list[Finding]
) -> None:
    """A pickle from another Python crashes or fails in the worker: said before the first run."""
    try:
        built = built_on(store.fetch(spec.file))
    except (OSError, ValueError, EOFError):
        built = None  # not a plain pickle stream: the loader says what it is
    if built is None or built == python:
        return
    findings.append(
        Finding(
            Verdict.FAIL,
            f"model '{spec.name}': '{spec.file}' was pickled on Python 3.{built}, and the "
            f"deployment runs 3.{python} ({PYTHON_SETTING}); {mismatch_advice(built, python)}",
        )
    )


def _numerai(
    settings: Settings, manifest: Manifest | None, findings: list[Finding]
) -> RoundInfo | None:
    """The keys, their scopes, the account's models and the current round (returned, if any)."""
    from shared.numerai_client import NumeraiClient

    numerai = NumeraiClient(settings)
    try:
        scopes = numerai.key_scopes()
        account = numerai.model_ids()
    except NumeraiKeysRefused as exc:
        findings.append(Finding(Verdict.FAIL, f"Numerai keys: {exc}"))
        return None
    except AppError as exc:
        findings.append(Finding(Verdict.FAIL, f"Numerai: {exc}"))
        return None
    if scopes is None:
        findings.append(
            Finding(
                Verdict.WARN,
                "Numerai keys: accepted, but Numerai lists no scopes for NUMERAI_PUBLIC_ID; check on "
                f"numer.ai (Account, API keys) that the key has the '{UPLOAD_SCOPE}' scope",
            )
        )
    elif UPLOAD_SCOPE not in scopes:
        findings.append(
            Finding(
                Verdict.FAIL,
                f"Numerai keys: accepted, but the key may not upload (its scopes: "
                f"{', '.join(scopes) or 'none'}); create a key with '{UPLOAD_SCOPE}' on numer.ai "
                "and set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY to it",
            )
        )
    else:
        findings.append(Finding(Verdict.OK, f"Numerai keys: accepted, scopes {', '.join(scopes)}"))
    if manifest is not None:
        missing = [s.name for s in manifest.models if s.submit and s.name not in account]
        for name in missing:
            findings.append(
                Finding(
                    Verdict.FAIL,
                    f"model '{name}': not a model of this Numerai account (it has: "
                    f"{', '.join(sorted(account)) or 'no models'}); create it on numer.ai, or "
                    "rename the entry",
                )
            )
        if not missing:
            findings.append(
                Finding(Verdict.OK, "account: every entry to submit is a model of the account")
            )
    return _round(numerai, findings)


def _round(numerai: NumeraiClient, findings: list[Finding]) -> RoundInfo | None:
    try:
        round_ = numerai.current_round()
    except AppError as exc:
        findings.append(Finding(Verdict.FAIL, f"round: {exc}"))
        return None
    if round_ is None:
        findings.append(Finding(Verdict.WARN, "round: Numerai reports no current round"))
        return None
    state = "open" if round_.is_open() else "closed for staking"
    findings.append(
        Finding(
            Verdict.OK,
            f"round: {round_.number}, {state}, window {round_.open_time:%a %Y-%m-%d %H:%M} to "
            f"{round_.close_time:%a %H:%M} UTC",
        )
    )
    return round_


def _schedule(
    environ: Mapping[str, str], findings: list[Finding], now: datetime, round_: RoundInfo | None
) -> None:
    schedule = (environ.get(SCHEDULE_SETTING) or "").strip() or DEFAULT_SCHEDULE
    try:
        # A week's firings at most (every ten minutes: about a thousand).
        firings = [f for f in next_firings(schedule, now, 2016) if f < now + timedelta(days=7)]
    except AppError as exc:
        findings.append(Finding(Verdict.FAIL, f"schedule: {exc}"))
        return
    if not firings:
        findings.append(
            Finding(
                Verdict.FAIL,
                f"schedule: {SCHEDULE_SETTING}={schedule!r} does not fire in the coming week",
            )
        )
        return
    shown = ", ".join(f"{f:%a %Y-%m-%d %H:%M:%S}" for f in firings[:FIRINGS_SHOWN])
    if round_ is not None and round_.is_open(now) and firings[0] >= round_.close_time:
        findings.append(
            Finding(
                Verdict.WARN,
                f"schedule: round {round_.number} closes for staking at "
                f"{round_.close_time:%a %H:%M} UTC, before the timer's next firing "
                f"({firings[0]:%a %H:%M} UTC): submit it now with `python -m shared run --submit`, "
                "or leave it",
            )
        )
    # Numerai opens rounds at 12:00 UTC, Tuesday to Saturday, for at least an hour.
    in_window = [f for f in firings if f.isoweekday() in (2, 3, 4, 5, 6) and f.hour == 12]
    if in_window:
        findings.append(Finding(Verdict.OK, f"schedule: next firings (UTC) {shown}"))
    else:
        findings.append(
            Finding(
                Verdict.WARN,
                f"schedule: next firings (UTC) {shown}; none between 12:00 and 13:00 UTC of a "
                f"Tuesday to Saturday, when every round can be staked: see the README's "
                f"'Weekly or daily' for a {SCHEDULE_SETTING} that fires then",
            )
        )


def main(environ: Mapping[str, str]) -> int:
    """Print every finding; exit 1 when any would make the next run fail."""
    findings = diagnose(environ)
    for finding in findings:
        (log.error if finding.verdict is Verdict.FAIL else log.info)("%s", finding.line())
    failed = [f for f in findings if f.verdict is Verdict.FAIL]
    log.info(
        "%s", f"{len(failed)} problem(s) to fix before the next run" if failed else "ready to run"
    )
    return 1 if failed else 0
