"""The batched prediction engine: one pass over the live data feeds every model.

Memory holds the loaded models, one batch of float32 features and each model's
predictions so far (one float per row). A model that fails to load, predict or
validate is reported with its error, and the other models carry on.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from shared.errors import DataError, PredictionError, SubmitterError
from shared.live_data import ID_COLUMN, FeatureBatch, LiveData, resolve_features
from shared.manifest import ModelSpec
from shared.model_formats import LoadedModel, WholeRoundModel, load_model
from shared.submission import build_submission, validate_submission

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 2000

T = TypeVar("T")


@dataclass
class ModelOutcome:
    """What happened to one model in one pass.

    `submission` is kept even when validation rejects it, so that predictions
    that were computed are never lost; `ok` says whether it may be uploaded.
    """

    name: str
    ok: bool = False
    rows: int = 0
    load_seconds: float = 0.0
    predict_seconds: float = 0.0
    error: str | None = None
    submission: pd.DataFrame | None = field(default=None, repr=False)


@dataclass
class _Slot:
    """A loaded model and where its features sit in the shared batch matrix."""

    spec: ModelSpec
    model: LoadedModel
    columns: list[str]
    positions: np.ndarray
    is_whole_batch: bool
    outcome: ModelOutcome
    outputs: list[np.ndarray] = field(default_factory=list)
    arrow_batches: list[pa.RecordBatch] = field(default_factory=list)


def predict_round(
    live: LiveData,
    feature_sets: dict[str, list[str]],
    models: list[tuple[ModelSpec, Path]],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    benchmark_path: Path | None = None,
    time_limit: float | None = None,
) -> list[ModelOutcome]:
    """Predict the round for every (spec, model file) and validate each submission.

    `benchmark_path` is the round's `live_benchmark_models.parquet`, read only
    if a Numerai pickle model is in the manifest. A model whose prediction takes
    longer than `time_limit` seconds is stopped and failed. Returns one outcome per model,
    in manifest order. Only a failure to read the data itself raises; each
    model's own failure is in its outcome.
    """
    outcomes = [ModelOutcome(name=spec.name) for spec, _ in models]
    slots = _load_all(live, feature_sets, models, outcomes)
    if not slots:
        return outcomes
    columns = _union(slot.columns for slot in slots)
    _place(slots, columns)
    ids = _run_batches(live, slots, columns, batch_rows, time_limit)
    # Read at most once, and only when a pickle model asks for it.
    benchmarks = functools.cache(lambda: _read_benchmarks(benchmark_path))
    for slot in slots:
        if slot.outcome.error is None:
            _finish(slot, ids, benchmarks, time_limit)
    return outcomes


def _load_all(
    live: LiveData,
    feature_sets: dict[str, list[str]],
    models: list[tuple[ModelSpec, Path]],
    outcomes: list[ModelOutcome],
) -> list[_Slot]:
    slots = []
    for (spec, path), outcome in zip(models, outcomes, strict=True):
        started = time.perf_counter()
        try:
            features = resolve_features(spec, feature_sets)
            live.check_features(spec, features)
            model = load_model(spec, path, features)
        except SubmitterError as exc:
            _fail(outcome, exc)
            continue
        finally:
            outcome.load_seconds = time.perf_counter() - started
        slots.append(_Slot(spec, model, features, np.empty(0, np.intp), False, outcome))
    return slots


def _union(column_lists) -> list[str]:
    """All columns any model needs, each once, in first-seen order."""
    return list(dict.fromkeys(c for columns in column_lists for c in columns))


def _place(slots: list[_Slot], columns: list[str]) -> None:
    index = {name: i for i, name in enumerate(columns)}
    for slot in slots:
        slot.positions = np.fromiter((index[c] for c in slot.columns), np.intp, len(slot.columns))
        slot.is_whole_batch = slot.columns == columns


def _run_batches(
    live: LiveData, slots: list[_Slot], columns: list[str], batch_rows: int, time_limit: float | None
) -> pd.Index:
    id_chunks: list[pa.Array] = []
    for batch in read_ahead(live.batches(columns, batch_rows)):
        id_chunks.append(batch.ids)
        for slot in slots:
            if slot.outcome.error is None:
                _feed(slot, batch, time_limit)
    if not id_chunks:
        raise DataError(f"{live.path.name} ({live.data_version}): has no rows")
    ids = pd.Index(pa.chunked_array(id_chunks).to_pandas(), name=ID_COLUMN)
    return ids


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


def _feed(slot: _Slot, batch: FeatureBatch, time_limit: float | None) -> None:
    if isinstance(slot.model, WholeRoundModel):
        slot.arrow_batches.append(batch.arrow.select(slot.columns))
        return
    features = batch.values if slot.is_whole_batch else batch.values[:, slot.positions]
    if batch.has_missing and slot.spec.fill_missing is not None:
        features = np.where(np.isnan(features), np.float32(slot.spec.fill_missing), features)
    started = time.perf_counter()
    try:
        slot.outputs.append(slot.model.predict_batch(features))
    except Exception as exc:  # any framework error fails this model only
        _fail(slot.outcome, exc)
        slot.outputs.clear()
    finally:
        slot.outcome.predict_seconds += time.perf_counter() - started
    if time_limit is not None and slot.outcome.error is None and slot.outcome.predict_seconds > time_limit:
        predicted = sum(len(o) for o in slot.outputs)
        _fail(slot.outcome, PredictionError(
            f"model '{slot.spec.name}': took longer than its limit of {time_limit:g} s "
            f"(stopped after {predicted} rows); raise MODEL_TIME_LIMIT_SECONDS if it needs more"
        ))
        slot.outputs.clear()


def _finish(
    slot: _Slot, ids: pd.Index, benchmarks: Callable[[], pd.DataFrame | None], time_limit: float | None
) -> None:
    outcome = slot.outcome
    started = time.perf_counter()
    try:
        if isinstance(slot.model, WholeRoundModel):
            frame, benchmark_models = _round_frame(slot, ids), benchmarks()
            outputs = _within_limit(slot.spec, lambda: slot.model.predict_round(frame, benchmark_models),
                                    time_limit)
        else:
            outputs = np.concatenate(slot.outputs)
        outcome.predict_seconds += time.perf_counter() - started
        outcome.rows = len(outputs)
        outcome.submission = build_submission(slot.spec, ids, outputs)
        validate_submission(slot.spec, outcome.submission, ids)
    except Exception as exc:  # includes a pickled predict() raising its own errors
        _fail(outcome, exc)
        return
    finally:
        slot.outputs.clear()
        slot.arrow_batches.clear()
    outcome.ok = True
    log.info("model %s: %d rows predicted and valid", slot.spec.name, outcome.rows)


def _within_limit(spec: ModelSpec, call: Callable[[], T], time_limit: float | None) -> T:
    """Run `call` in a thread and give up on it after `time_limit` seconds.

    Python cannot stop a thread: a predict() that overruns keeps its thread
    until it returns, but the run goes on without it and reports it failed.
    """
    if time_limit is None:
        return call()
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed over to the caller below
            error.append(exc)

    worker = threading.Thread(target=target, name=f"predict-{spec.name}", daemon=True)
    worker.start()
    worker.join(time_limit)
    if worker.is_alive():
        raise PredictionError(
            f"model '{spec.name}': took longer than its limit of {time_limit:g} s; "
            "raise MODEL_TIME_LIMIT_SECONDS if it needs more"
        )
    if error:
        raise error[0]
    return result[0]


def _read_benchmarks(path: Path | None) -> pd.DataFrame | None:
    if path is None or not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path.name}: not a readable parquet file ({exc})") from None


def _round_frame(slot: _Slot, ids: pd.Index) -> pd.DataFrame:
    """The model's columns for the whole round as Numerai's runner passes them."""
    frame = pa.Table.from_batches(slot.arrow_batches).to_pandas()
    frame.index = ids
    if slot.spec.fill_missing is not None:
        frame = frame.fillna(slot.spec.fill_missing)
    return frame


def _fail(outcome: ModelOutcome, exc: BaseException) -> None:
    if isinstance(exc, SubmitterError):
        message = str(exc)
    else:
        message = f"model '{outcome.name}': {type(exc).__name__}: {str(exc).strip()[:500]}"
    outcome.ok = False
    outcome.error = message
    log.warning("%s", message)
