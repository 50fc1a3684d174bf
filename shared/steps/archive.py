"""Checking a model's predictions against the round's benchmark and keeping them, before any upload."""

from __future__ import annotations

from shared.errors import AppError, StorageError
from shared.report import Mode, ModelReport, ModelStatus
from shared.steps import benchmark_check
from shared.steps.context import RoundContext
from shared.steps.ensembles import RoundInputs
from shared.steps.predict import Prediction, made_from
from shared.storage.archive import PREDICTIONS, TEST_PREDICTIONS, predictions_blob


def archive_prediction(
    ctx: RoundContext, prediction: Prediction, inputs: RoundInputs
) -> ModelReport:
    """The model's line once its predictions are checked and kept, valid or not.

    Pending means ready to upload (a scheduled run's model to submit); otherwise the
    line says how the model ended: failed, gated, predicted (`submit: false`) or validated.
    """
    spec, outcome = prediction.spec, prediction.outcome
    line = ModelReport(
        spec.name,
        rows=outcome.rows,
        seconds=round(outcome.load_seconds + outcome.predict_seconds, 3),
        peak_memory_mb=outcome.peak_memory_mb,
        warnings=list(outcome.warnings),
        from_archive=prediction.from_archive,
        data_version=None if spec.is_ensemble else ctx.data_version(spec),
    )
    passed = True
    if outcome.ok and spec.submit and prediction.csv is not None:
        passed = _benchmark_check(ctx, line, prediction, inputs)
    if prediction.csv is not None and not prediction.from_archive:
        try:
            line.predictions_blob = _write(ctx, prediction, line.benchmark_corr if passed else None)
        except StorageError as exc:
            line.fail(
                f"model '{spec.name}': predictions could not be archived, so they were not uploaded: {exc}"
            )
            return line
    elif prediction.from_archive:
        line.predictions_blob = predictions_blob(PREDICTIONS, ctx.round_number, spec.name)
    if not outcome.ok:
        line.fail(outcome.error or f"model '{spec.name}' failed")
        line.output = list(outcome.output)
    elif not passed:
        pass  # held back by the gate; the line says why
    elif not spec.submit:
        line.status = ModelStatus.PREDICTED
    elif ctx.mode is Mode.TEST:
        line.status = ModelStatus.VALIDATED
    return line


def _benchmark_check(
    ctx: RoundContext, line: ModelReport, prediction: Prediction, inputs: RoundInputs
) -> bool:
    spec, csv = prediction.spec, prediction.csv
    assert csv is not None  # checked by the caller
    archive = ctx.results.archive
    try:
        return benchmark_check.check(spec, line, csv, inputs.benchmark, archive, ctx.round_number)
    except (
        AppError
    ) as exc:  # the round's data could not be had: the check says so, and gates hold back
        return benchmark_check.check(
            spec, line, csv, benchmark_check.Benchmark(None, str(exc)), archive, ctx.round_number
        )


def _write(ctx: RoundContext, prediction: Prediction, benchmark_corr: float | None) -> str:
    spec, outcome = prediction.spec, prediction.outcome
    assert prediction.csv is not None  # checked by the caller
    name = spec.name if outcome.ok else f"{spec.name}.rejected"
    folder = TEST_PREDICTIONS if ctx.mode is Mode.TEST else PREDICTIONS
    metadata = {**made_from(ctx, spec, prediction.model_etag), "run_id": ctx.run_id}
    if (
        benchmark_corr is not None
    ):  # a later round's check compares with it; a gated figure is left out
        metadata["benchmark_corr"] = f"{benchmark_corr:.4f}"
    return ctx.results.archive.write(ctx.round_number, name, prediction.csv, folder, metadata)
