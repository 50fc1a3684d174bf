"""The batched prediction engine: one model, one round, inside that model's worker process.

A batch model reads only its own columns of `live.parquet`, a fixed number of
rows at a time, so memory holds the model, one batch of float32 features and
one float per row predicted so far. A Numerai upload pickle gets the whole
round, as Numerai's runner gives it. Either way the predictions are validated
against Numerai's rules and written as the submission CSV, valid or not.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from shared.data.live_data import ID_COLUMN, LiveData, read_feature_sets, resolve_features
from shared.data.submission_rules import build_submission, validate_submission
from shared.errors import AppError, DataError, RejectedPredictions
from shared.formats import BatchModel, load_model
from shared.worker.protocol import PREDICTIONS_FILE, ModelOutcome, Phase, WorkRequest

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_model(
    request: WorkRequest, enter: Callable[[Phase], None] = lambda phase: None
) -> ModelOutcome:
    """Load, predict and validate one model; write its predictions and return its outcome.

    `enter` is told each phase as it starts. Every failure of the model or its
    data is caught into the outcome; predictions that were made are written
    even when they fail validation.
    """
    spec = request.spec
    outcome = ModelOutcome(name=spec.name)
    started = time.perf_counter()
    try:
        enter(Phase.LOADING)
        features = (
            None
            if spec.features is None
            else resolve_features(spec, read_feature_sets(request.features_path))
        )
        model = load_model(spec, request.model_path, features)
        outcome.load_seconds = time.perf_counter() - started
        outcome.warnings = model.warnings
        for warning in model.warnings:
            log.warning("%s", warning)
        enter(Phase.PREDICTING)
        started = time.perf_counter()
        if isinstance(model, BatchModel):
            submission, live_ids = _predict_batches(model, request)
            csv = submission.to_csv(index=False)
        else:
            # Feature values are not checked: Numerai's runner hands live.parquet over as it is, and
            # only the submission is judged (a bad value in a column the function never reads is harmless).
            csv, live_ids = model.predict_round(request.live_path, request.benchmark_path)
            # Validated as Numerai reads the uploaded file.
            submission = pd.read_csv(io.StringIO(csv))
        outcome.predict_seconds = time.perf_counter() - started
        outcome.rows = len(submission)
        (request.output_dir / PREDICTIONS_FILE).write_text(csv)
        outcome.has_predictions = True
        enter(Phase.VALIDATING)
        validate_submission(spec, submission, pd.Index(live_ids))
    except RejectedPredictions as exc:
        (request.output_dir / PREDICTIONS_FILE).write_text(exc.csv)
        outcome.has_predictions = True
        outcome.fail(str(exc))
        return outcome
    except Exception as exc:  # a model's own errors, whatever their type, fail it alone
        outcome.fail(_message(spec.name, exc))
        log.warning("%s", outcome.error)
        return outcome
    outcome.ok = True
    log.info("model %s: %d rows predicted and valid", spec.name, outcome.rows)
    return outcome


def _predict_batches(model: BatchModel, request: WorkRequest) -> tuple[pd.DataFrame, pd.Index]:
    live = LiveData(request.live_path, request.data_version)
    live.check_features(model.spec, model.columns)
    fill = model.spec.fill_missing
    id_chunks: list[pa.Array] = []
    outputs: list[np.ndarray] = []
    for batch in read_ahead(live.checked_batches(model.spec, model.columns, request.batch_rows)):
        id_chunks.append(batch.ids)
        features = batch.values
        if batch.has_missing and fill is not None:
            features = np.where(np.isnan(features), np.float32(fill), features)
        outputs.append(model.predict_batch(features))
    if not id_chunks:
        raise DataError(f"{live.path.name} ({live.data_version}): has no rows")
    ids = pd.Index(pa.chunked_array(id_chunks).to_pandas(), name=ID_COLUMN)
    return build_submission(model.spec, ids, np.concatenate(outputs)), ids


def read_ahead(batches: Iterator[T]) -> Iterator[T]:
    """Produce the next item in a thread while the caller works on this one.

    Reading and converting a batch (pyarrow, numpy) and predicting (TensorFlow,
    LightGBM, onnxruntime) all release the GIL, so the two overlap. The queue
    holds one item, so memory holds at most three batches.
    """
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                if not _put(handoff, (True, item), stop):
                    return
            _put(handoff, (False, None), stop)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(handoff, (False, exc), stop)

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            more, item = handoff.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _put(handoff: queue.Queue, item: tuple[bool, Any], stop: threading.Event) -> bool:
    """Put unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _message(name: str, exc: BaseException) -> str:
    if isinstance(exc, AppError):
        return str(exc)
    return f"model '{name}': {type(exc).__name__}: {str(exc).strip()[:500]}"
