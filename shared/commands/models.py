"""`python -m shared models add|list|remove|check`: the models container and its manifest.

`add` uploads a model file, names its format from its bytes and writes its manifest entry; the
manifest is checked as a run checks it before anything is uploaded, and replaced only if nobody
changed it meanwhile (its ETag). `check` is a test run of the chosen models: the round's data
version, the files downloaded by the run's client, the workers, validation and the benchmark check,
with nothing uploaded to Numerai.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from shared.errors import AppError, ManifestError, StorageError
from shared.formats.sniff import HEAD_BYTES, detect_format, mismatch
from shared.manifest import ModelFormat, ModelSpec, parse_manifest
from shared.report import Mode, RunReport
from shared.settings import Settings
from shared.storage import Results
from shared.storage.client import service_client
from shared.storage.models import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRow:
    """One manifest entry as `models list` shows it."""

    name: str
    file: str | None
    format: str | None
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_submission: str | None = None  # "round N, <submission id>" from the ledger

    def line(self) -> str:
        """The row as one line of text."""
        if self.file is None:
            return f"{self.name:<24} ensemble  {self._submitted()}"
        if self.size is None:
            return f"{self.name:<24} {self.format:<14} {self.file}: MISSING from the container"
        return (
            f"{self.name:<24} {self.format:<14} {self.file}  {self.size:,} bytes  "
            f"ETag {self.etag}  modified {self.last_modified}  {self._submitted()}"
        )

    def _submitted(self) -> str:
        return (
            f"last submitted {self.last_submission}" if self.last_submission else "never submitted"
        )


def model_store(settings: Settings) -> ModelStore:
    """The models container the settings name."""
    return ModelStore(
        service_client(settings), settings.models_container, settings.work_dir / "model-cache"
    )


def entry_for_file(
    path: Path,
    name: str | None,
    format_name: str | None,
    blob: str | None,
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest entry of a local model file: its format from its bytes unless given."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise ManifestError(f"model file {path}: cannot be read ({exc.strerror or exc})") from None
    detected, looks_like = detect_format(head)
    if format_name is None:
        if detected is None:
            advice = (
                "give --format sklearn (a saved estimator or pipeline) or --format numerai_pickle "
                "(a function made for Numerai's model uploads)"
                if looks_like == "a pickle or joblib file"
                else f"give --format ({', '.join(f.value for f in ModelFormat)})"
            )
            what = f"looks like {looks_like}" if looks_like else "has no format its bytes tell"
            raise ManifestError(f"model file {path} {what}: {advice}")
        format_name = detected.value
    return {
        "name": name or _model_name(path),
        "file": blob or path.name,
        "format": format_name,
        **{key: value for key, value in fields.items() if value is not None},
    }


def add_model(settings: Settings, path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Upload `path` as the entry's file and write the entry into the manifest (replacing one of
    the same name); the whole manifest is checked first, so nothing is uploaded for an entry a run
    would refuse. Returns the entry as written."""
    store = model_store(settings)
    store.ensure_container()
    current = store.read_text_and_etag(settings.manifest_blob)
    document = _document(settings, current)
    models = document["models"]
    at = next(
        (i for i, e in enumerate(models) if isinstance(e, dict) and e.get("name") == entry["name"]),
        None,
    )
    replaced = at is not None
    if at is None:
        models.append(entry)
    else:
        models[at] = entry
    text = _checked(settings, document)
    # A file of another format than the entry says fails in its worker: refused here instead.
    problem = mismatch(ModelSpec.model_validate(entry), path)
    if problem is not None:
        raise ManifestError(problem)
    uploaded = store.upload_file(entry["file"], path)
    log.info(
        "uploaded %s as '%s' (%d bytes, ETag %s)", path, entry["file"], uploaded.size, uploaded.etag
    )
    _write(settings, store, text, current)
    log.info("manifest entry '%s' %s", entry["name"], "replaced" if replaced else "added")
    return entry


def remove_model(settings: Settings, name: str, keep_file: bool) -> dict[str, Any]:
    """Remove an entry from the manifest, and its file unless another entry uses it or `keep_file`."""
    store = model_store(settings)
    current = store.read_text_and_etag(settings.manifest_blob)
    document = _document(settings, current)
    found = [e for e in document["models"] if isinstance(e, dict) and e.get("name") == name]
    if not found:
        names = [e.get("name") for e in document["models"] if isinstance(e, dict)]
        raise ManifestError(
            f"model '{name}' is not in {_source(settings)}; it has: {', '.join(map(str, names)) or 'no models'}"
        )
    document["models"] = [e for e in document["models"] if e is not found[0]]
    _write(settings, store, _checked(settings, document), current)
    file = found[0].get("file")
    still_used = any(isinstance(e, dict) and e.get("file") == file for e in document["models"])
    if file and not keep_file and not still_used:
        store.delete(file)
        log.info("deleted model file '%s'", file)
    return found[0]


def list_models(settings: Settings) -> list[ModelRow]:
    """Every manifest entry with its file's size, ETag and last-modified time, and its last
    submission the ledger records."""
    store = model_store(settings)
    manifest = parse_manifest(store.read_text(settings.manifest_blob), _source(settings))
    last = _last_submissions(settings)
    rows = []
    for spec in manifest.models:
        if spec.is_ensemble:
            rows.append(ModelRow(spec.name, None, None, last_submission=last.get(spec.name)))
            continue
        properties = store.properties(spec.file)
        assert spec.format is not None  # a file's entry has one
        if properties is None:
            rows.append(ModelRow(spec.name, spec.file, spec.format.value))
            continue
        rows.append(
            ModelRow(
                spec.name,
                spec.file,
                spec.format.value,
                properties.size,
                properties.etag,
                properties.last_modified.isoformat(timespec="seconds"),
                last.get(spec.name),
            )
        )
    return rows


def check_models(environ: Mapping[str, str], names: list[str] | None) -> RunReport:
    """A test run of `names` (None: every model): everything the scheduled run does but the upload."""
    from shared.run.job import run_job
    from shared.triggers.executors import executor_for

    return run_job(Mode.TEST, executor_for, names, environ=environ)


def _last_submissions(settings: Settings) -> dict[str, str]:
    """Each model's last submission in the ledger; none when the results container cannot be read
    (a deploying user may have a role on the models container only)."""
    try:
        records = Results.from_settings(settings).ledger.records()
    except StorageError as exc:
        log.warning("the last submissions are not shown: %s", exc)
        return {}
    # Sorted by round: the last one of a model wins.
    return {r.model_name: f"round {r.round_number} ({r.submission_id})" for r in records}


def _document(settings: Settings, current: tuple[str, str] | None) -> dict[str, Any]:
    if current is None:
        return {"models": []}
    try:
        document = json.loads(current[0])
    except ValueError as exc:
        raise ManifestError(
            f"{_source(settings)} is not valid JSON ({exc}); fix it first"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ManifestError(f'{_source(settings)} has no "models" list; fix it first')
    return document


def _checked(settings: Settings, document: dict[str, Any]) -> str:
    text = json.dumps(document, indent=2) + "\n"
    parse_manifest(text, _source(settings))  # a run would refuse what this refuses
    return text


def _write(
    settings: Settings, store: ModelStore, text: str, current: tuple[str, str] | None
) -> None:
    if not store.write_text(settings.manifest_blob, text, None if current is None else current[1]):
        raise StorageError(
            f"{_source(settings)} changed while this command worked; nothing of it was lost: run the "
            "command again"
        )


def _source(settings: Settings) -> str:
    return f"{settings.models_container}/{settings.manifest_blob}"


def _model_name(path: Path) -> str:
    """A Numerai-style model name from a file's name: lowercase letters, digits and '_'."""
    return re.sub(r"[^a-z0-9_]", "_", PurePosixPath(path.name).stem.lower())[:64]


def main(args: Any) -> int:
    """`python -m shared models …`: 0 done, 1 a checked model failed, 2 nothing could be done."""
    from shared.commands.environ import command_environ
    from shared.settings import load_settings

    try:
        environ = command_environ(args.settings)
        if args.action == "check":
            report = check_models(environ, args.models)
            log.info("%s", report.summary())
            return 1 if report.failed else 0
        settings = load_settings(environ)
        if args.action == "add":
            entry = entry_for_file(args.file, args.name, args.format, args.blob, _fields(args))
            log.info("%s", json.dumps(add_model(settings, args.file, entry), indent=2))
        elif args.action == "remove":
            removed = remove_model(settings, args.name, args.keep_file)
            log.info("removed the entry of model '%s': %s", args.name, json.dumps(removed))
        else:
            rows = list_models(settings)
            for row in rows:
                log.info("%s", row.line())
            if not rows:
                log.info("the manifest lists no models")
    except AppError as exc:
        log.error("%s", exc)
        return 2
    return 0


def _fields(args: Any) -> dict[str, Any]:
    """The optional fields of `models add`, as the manifest names them (None: left out)."""
    features = args.features
    if features is not None and "," in features:
        features = [name.strip() for name in features.split(",") if name.strip()]
    return {
        "features": features,
        "output": args.output,
        "data_version": args.data_version,
        "method": args.method,
        "trust_pickle": True if args.trust_pickle else None,
        "submit": False if args.no_submit else None,
        "min_benchmark_corr": args.min_benchmark_corr,
    }
