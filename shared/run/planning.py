"""Planning a run: whether the round takes it, which models, and which of them still need work.

Nothing here predicts or uploads; it returns what it found, and the run hands the
pending models to its executor.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from shared.errors import AppError
from shared.manifest import DATA_VERSION_PATTERN, Manifest, ModelSpec, parse_manifest
from shared.numerai_client import RoundInfo, version_key
from shared.report import Mode, ModelReport, ModelStatus
from shared.steps.context import RoundContext, Services
from shared.steps.submitted import already_submitted, note_ledger
from shared.steps.window import check_listed, duration, staking_closed_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundDecision:
    """Whether a run goes on with the round Numerai names, and the reason its report gives."""

    round: RoundInfo | None
    goes_on: bool
    reason: str | None = None
    after_window: bool = False  # the first scheduled run after the round's staking close


@dataclass
class ModelPlan:
    """The run's models: every line in manifest order, and which of them the executor works on."""

    lines: dict[str, ModelReport]  # pending lines may carry warnings from planning
    pending: list[ModelSpec]
    notes: list[str] = field(default_factory=list)


def decide_round(services: Services, mode: Mode, round_: RoundInfo | None) -> RoundDecision:
    """Whether the run goes on with `round_`: open, a test run, or the first scheduled run after its close."""
    if round_ is None:
        return RoundDecision(None, False, "Numerai reports no current round")
    if round_.is_open():
        return RoundDecision(round_, True)
    closed = (
        f"round {round_.number} is not open for submissions (window {round_.open_time.isoformat()} to "
        f"{round_.close_time.isoformat()})"
    )
    if mode is Mode.TEST:
        # A test run exists to prove the next run will work: it carries on with the latest data.
        return RoundDecision(round_, True, f"{closed}; the test run used its data")
    late = staking_closed_for(round_)
    checked_by = None if late is None else services.results.runs.window_checked_by(round_.number)
    if late is None or checked_by is not None:
        done = f"; run {checked_by} already checked what Numerai lists for it" if checked_by else ""
        return RoundDecision(round_, False, f"{closed}{done}; nothing was downloaded or uploaded")
    # The first scheduled run after the close: it checks, archives, and uploads only if SUBMIT_LATE.
    late_policy = (
        "late submissions are scored but not staked (SUBMIT_LATE=true)"
        if services.settings.submit_late
        else "what was not submitted in the window is archived, not uploaded (SUBMIT_LATE=false)"
    )
    return RoundDecision(
        round_,
        True,
        f"round {round_.number} closed for staking {duration(late)} ago; {late_policy}",
        after_window=True,
    )


def read_manifest(
    services: Services, model_names: list[str] | None, submit_members: bool = True
) -> Manifest:
    """The manifest in the models container, narrowed to `model_names` (and what their ensembles need).

    With `submit_members` False, the members of a named ensemble are predicted but not submitted.
    """
    settings = services.settings
    source = f"{settings.models_container}/{settings.manifest_blob}"
    manifest = parse_manifest(services.models.read_text(settings.manifest_blob), source)
    return manifest.select(model_names, submit_members)


def plan_models(
    ctx: RoundContext, manifest: Manifest, account: dict[str, str], decision: RoundDecision
) -> ModelPlan:
    """Each model's line so far, and the entries still to work on (members before their ensembles)."""
    order = manifest.in_order()
    lines = {spec.name: ModelReport(spec.name) for spec in order}
    for name, line in _not_in_account(manifest, account).items():
        lines[name] = line
    pending_names = [name for name, line in lines.items() if line.status is ModelStatus.PENDING]
    if ctx.mode is Mode.SCHEDULED and not ctx.settings.force_resubmit:
        lines.update(already_submitted(ctx, pending_names, account))
    if decision.after_window:
        assert decision.round is not None  # a run after the window has its round
        check_listed(lines, ctx.services.numerai, account, decision.round)
    pending, skipped = _needed(order, lines)
    lines.update(skipped)
    if ctx.mode is Mode.TEST:
        for line in lines.values():
            if line.status is not ModelStatus.PENDING:
                note_ledger(ctx, line)
    notes = [note] if pending and (note := newer_version_note(ctx, pending)) else []
    return ModelPlan(lines, pending, notes)


def _not_in_account(manifest: Manifest, account: dict[str, str]) -> dict[str, ModelReport]:
    """Every entry to submit must be a model of the account; `submit: false` ones need not be."""
    failed = {}
    for spec in manifest.models:
        if spec.submit and spec.name not in account:
            line = ModelReport(spec.name)
            line.fail(
                f"model '{spec.name}' is not a Classic model of this Numerai account; "
                f"the account has: {', '.join(sorted(account)) or 'no models'}"
            )
            failed[spec.name] = line
    return failed


def _needed(
    order: list[ModelSpec], lines: dict[str, ModelReport]
) -> tuple[list[ModelSpec], dict[str, ModelReport]]:
    """The pending entries to work on (those to submit, and what their ensembles need), and the skipped lines.

    An entry with `submit: false` that no pending ensemble needs is skipped.
    """
    pending = [s for s in order if lines[s.name].status is ModelStatus.PENDING]
    wanted = {s.name for s in pending if s.submit}
    for spec in reversed(pending):  # ensembles come after their members: walk down from them
        if spec.name in wanted and spec.members:
            wanted.update(spec.members)
    skipped = {}
    for spec in pending:
        if spec.name not in wanted:
            skipped[spec.name] = ModelReport(
                spec.name,
                status=ModelStatus.SKIPPED,
                error=(
                    f"model '{spec.name}': submit is false and no ensemble to submit this run needs it"
                ),
            )
    return [s for s in pending if s.name in wanted], skipped


def newer_version_note(ctx: RoundContext, pending: list[ModelSpec]) -> str | None:
    """A note for the report when Numerai lists a newer data version than models use; a failed look-up is logged.

    Not an error: a model keeps the version it was trained on.
    """
    used: dict[str, list[str]] = {}
    for spec in pending:
        if not spec.is_ensemble:
            used.setdefault(ctx.data_version(spec), []).append(spec.name)
    try:
        listed = ctx.services.numerai.data_versions(ctx.round_number)
    except AppError as exc:
        log.warning("the data versions Numerai lists could not be had: %s", exc)
        return None
    if not listed:
        return None
    newest = listed[-1]
    older = sorted(
        (
            v
            for v in used
            if re.fullmatch(DATA_VERSION_PATTERN, v) and version_key(v) < version_key(newest)
        ),
        key=version_key,
    )
    if not older:
        return None
    models = "; ".join(f"{v}: {', '.join(used[v])}" for v in older)
    return (
        f"Numerai lists data version {newest}, newer than some models use ({models}); a model keeps the "
        "version it was trained on: retrain it on the new one, then set its data_version"
    )
