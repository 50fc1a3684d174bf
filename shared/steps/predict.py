"""Predicting a round's models in their workers, or taking what an earlier run of the round archived."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shared.errors import AppError, DataVersionUnavailable, StorageError
from shared.manifest import ModelFormat, ModelSpec
from shared.report import Mode
from shared.steps.context import RoundContext
from shared.steps.round_data import FetcherFor
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import run_workers

log = logging.getLogger(__name__)

# Stands for a model file's ETag in an ensemble's archive metadata: an ensemble has no file.
ENSEMBLE_ETAG = "ensemble"


@dataclass
class Prediction:
    """A model's predictions for this run, made now or taken from the archive.

    `csv` is the one text that is both archived and uploaded, byte for byte; a model
    that could not be predicted has none, and its outcome says why.
    """

    spec: ModelSpec
    outcome: ModelOutcome
    model_etag: str
    csv: str | None
    from_archive: bool = False

    @classmethod
    def failed(cls, spec: ModelSpec, error: str) -> Prediction:
        """A model that could not be predicted, for `error`."""
        return cls(spec, ModelOutcome(name=spec.name, error=error), "", None)


def made_from(ctx: RoundContext, spec: ModelSpec, etag: str) -> dict[str, str]:
    """Everything that changes a model's predictions in a round: a later run reuses them only if all match."""
    return {
        "model_etag": etag,
        "data_version": ctx.data_version(spec),
        "entry_digest": spec.digest(),
    }


def reuse_or_predict(
    ctx: RoundContext, specs: list[ModelSpec], work_dir: Path, data: FetcherFor
) -> dict[str, Prediction]:
    """Each model's predictions, by name: archived by an earlier scheduled run of the round, or made now."""
    done: dict[str, Prediction] = {}
    to_predict: list[tuple[ModelSpec, str]] = []
    for spec in specs:
        try:
            etag = ctx.services.models.etag(spec.file)
            archived = _reusable_archive(ctx, spec, etag)
        except StorageError as exc:
            done[spec.name] = Prediction.failed(spec, f"model '{spec.name}': {exc}")
            continue
        if archived is not None:
            done[spec.name] = archived
        else:
            to_predict.append((spec, etag))
    done.update(_predict(ctx, to_predict, work_dir, data))
    return {spec.name: done[spec.name] for spec in specs}


def _reusable_archive(ctx: RoundContext, spec: ModelSpec, etag: str) -> Prediction | None:
    """The archived predictions of this round, if a scheduled run made them from this very model file."""
    if ctx.mode is Mode.TEST:
        return None
    archived = ctx.results.archive.archived(ctx.round_number, spec.name)
    if archived is None:
        return None
    if any(
        archived.metadata.get(key) != value for key, value in made_from(ctx, spec, etag).items()
    ):
        return None
    log.info("model %s: reusing the predictions archived for round %d", spec.name, ctx.round_number)
    rows = archived.csv.count("\n") - 1  # a header line, then one line per id
    return Prediction(
        spec,
        ModelOutcome(name=spec.name, ok=True, rows=rows),
        etag,
        archived.csv,
        from_archive=True,
    )


def _predict(
    ctx: RoundContext, pending: list[tuple[ModelSpec, str]], work_dir: Path, data: FetcherFor
) -> dict[str, Prediction]:
    # fetch() reads the ETag again. Should the file change in between, the archive
    # records the older ETag and a later run predicts again: the safe side.
    done: dict[str, Prediction] = {}
    files = []
    for spec, etag in pending:
        try:
            files.append((spec, ctx.services.models.fetch(spec.file), etag))
        except StorageError as exc:
            done[spec.name] = Prediction.failed(spec, f"model '{spec.name}': {exc}")
    if not files:
        return done
    ctx.check_deadline("downloading the round's data")
    requests, ready = _requests(ctx, files, work_dir, data, done)
    outcomes = run_workers(
        requests, ctx.settings.worker_limits(ctx.ends_at), ctx.settings.max_parallel_models
    )
    for (spec, _, etag), outcome in zip(ready, outcomes, strict=True):
        done[spec.name] = Prediction(spec, outcome, etag, outcome.csv)
    return done


def _requests(
    ctx: RoundContext,
    files: list[tuple[ModelSpec, Path, str]],
    work_dir: Path,
    data: FetcherFor,
    failed: dict[str, Prediction],
) -> tuple[list[WorkRequest], list[tuple[ModelSpec, Path, str]]]:
    """The workers' requests, each with its model's data version's files, and the (spec, file, etag) they are for.

    A version Numerai lacks fails its models (added to `failed`). So does a failed download of a
    version, unless it is the run's own, which every step reads, or the only one (then a queue
    task is retried): the run fails.
    """
    by_version: dict[str, list[tuple[ModelSpec, Path, str]]] = {}
    for entry in files:
        by_version.setdefault(ctx.data_version(entry[0]), []).append(entry)
    requests, ready = [], []
    for version, group in by_version.items():
        try:
            round_files = data(version).files(
                any(spec.format is ModelFormat.NUMERAI_PICKLE for spec, _, _ in group)
            )
        except AppError as exc:
            if not isinstance(exc, DataVersionUnavailable) and (
                version == ctx.settings.data_version or len(by_version) == 1
            ):
                raise
            failed.update(
                {
                    spec.name: Prediction.failed(spec, f"model '{spec.name}': {exc}")
                    for spec, _, _ in group
                }
            )
            continue
        requests += [
            WorkRequest(
                spec,
                path,
                round_files.live,
                round_files.features,
                round_files.benchmark,
                version,
                ctx.settings.batch_rows,
                work_dir / "workers" / spec.name,
            )
            for spec, path, _ in group
        ]
        ready += group
    return requests, ready
