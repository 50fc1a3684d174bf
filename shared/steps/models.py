"""The model step: a round's pending models predicted (or reused), post-processed, checked, archived and,
in a scheduled run, uploaded exactly once; each model's line comes back.

A local run passes every pending entry (members before their ensembles); a queue
task passes its one. Both call `process_models`, so both do the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.manifest import ModelSpec
from shared.report import Mode, ModelReport
from shared.steps.archive import archive_prediction
from shared.steps.context import RoundContext
from shared.steps.ensembles import RoundInputs, ensemble_prediction, neutralize_prediction
from shared.steps.predict import Prediction, reuse_or_predict
from shared.steps.round_data import FetcherFor
from shared.steps.submitted import note_ledger
from shared.steps.upload import upload


@dataclass
class ModelResults:
    """What the model step did: each model's line, by name, and what concerns the whole run."""

    lines: dict[str, ModelReport] = field(default_factory=dict)
    stopped: str | None = (
        None  # why the run stopped before it was done (the lock lost, the deadline)
    )
    notes: list[str] = field(default_factory=list)  # for the run's reason


def process_models(
    ctx: RoundContext,
    pending: list[ModelSpec],
    account: dict[str, str],
    work_dir: Path,
    data: FetcherFor,
    elsewhere: dict[str, ModelReport] | None = None,
) -> ModelResults:
    """Work on `pending` (members before their ensembles) and return each one's line.

    `data` gives each data version's files. A model predicts from, and is neutralized
    against, its own version's files, and checked against its version's benchmark;
    ensembles read the run's version's. `elsewhere` holds lines of models not in `pending`
    that an ensemble may need to know failed.
    """
    versions = {
        ctx.settings.data_version,
        *(ctx.data_version(s) for s in pending if not s.is_ensemble),
    }
    inputs_of = {
        version: RoundInputs(data(version), ctx.settings.benchmark_model) for version in versions
    }
    inputs = inputs_of[ctx.settings.data_version]
    made: dict[str, Prediction] = {
        name: neutralize_prediction(prediction, inputs_of[ctx.data_version(prediction.spec)])
        for name, prediction in reuse_or_predict(
            ctx, [s for s in pending if not s.is_ensemble], work_dir, data
        ).items()
    }
    for spec in pending:
        if spec.is_ensemble:
            made[spec.name] = ensemble_prediction(ctx, spec, made, elsewhere or {}, inputs)
    # Each model is checked against its own version's benchmark; an ensemble against the run's version's.
    lines = {
        spec.name: archive_prediction(
            ctx, made[spec.name], inputs if spec.is_ensemble else inputs_of[ctx.data_version(spec)]
        )
        for spec in pending
    }
    if ctx.mode is Mode.TEST:
        for line in lines.values():
            note_ledger(ctx, line)
        return ModelResults(lines)
    uploaded = upload(ctx, lines, made, account, work_dir)
    return ModelResults(uploaded.lines, uploaded.stopped, uploaded.notes)
