"""`python -m shared predict`: the manifest's models on a round's files, each in its own worker.

The files come from a folder (`--data`, one data version) or from Numerai (`--round-from-numerai`:
the current round's files of every data version the entries use, downloaded with the run's client).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.commands.environ import command_environ
from shared.errors import AppError, DataError
from shared.limits import WorkerLimits, default_memory_limit_mb
from shared.manifest import ModelSpec, load_manifest
from shared.settings import DEFAULT_BATCH_ROWS, Settings, load_settings
from shared.worker.pool import shared_pool
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import run_workers, worker_environment

log = logging.getLogger(__name__)

FEATURES = "features.json"
LIVE = "live.parquet"
BENCHMARK = "live_benchmark_models.parquet"


@dataclass
class ModelSummary:
    """One model's line in `summary.json`."""

    name: str
    ok: bool
    rows: int
    load_seconds: float
    predict_seconds: float
    peak_memory_mb: float
    error: str | None
    csv: str | None

    @classmethod
    def from_outcome(cls, outcome: ModelOutcome, csv: Path | None) -> ModelSummary:
        return cls(
            outcome.name,
            outcome.ok,
            outcome.rows,
            round(outcome.load_seconds, 3),
            round(outcome.predict_seconds, 3),
            outcome.peak_memory_mb,
            outcome.error,
            csv.name if csv else None,
        )


@dataclass
class PredictSummary:
    """What `predict` did, written as `summary.json`."""

    data: str
    data_version: str
    rows: int
    batch_rows: int
    seconds: float
    peak_rss_mb: float
    models: list[ModelSummary] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [m.name for m in self.models if not m.ok]


def predict_local(
    data_dirs: Mapping[str, Path],
    manifest_path: Path,
    out_dir: Path,
    *,
    data_version: str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    model_names: list[str] | None = None,
    limits: WorkerLimits | None = None,
    max_parallel: int = 1,
) -> PredictSummary:
    """Predict a round with every model and write its CSVs and summary to `out_dir`.

    `data_dirs` holds each data version's files (`features.json`, `live.parquet`, optionally the
    benchmarks); an entry predicts from its `data_version` (`data_version` when it names none),
    and one whose version is not there fails, saying so. Ensembles are left out: they combine
    other entries' predictions in a run.
    `limits` defaults to the app's (MODEL_TIME_LIMIT_SECONDS and its memory share).
    """
    started = time.perf_counter()
    # The fork server's imports (about 2 s) run while this process reads the manifest.
    shared_pool().prestart(worker_environment())
    manifest_path = manifest_path.absolute()
    manifest = load_manifest(manifest_path).select(model_names)
    workers = out_dir / "workers"
    requests, refused = [], []
    specs = [spec for spec in manifest.models if not spec.is_ensemble]
    for spec in specs:
        version = spec.data_version or data_version
        folder = data_dirs.get(version)
        if folder is None:
            refused.append(_refused(spec, version, data_version))
            continue
        benchmark = folder / BENCHMARK
        requests.append(
            WorkRequest(
                spec,
                manifest_path.parent / spec.file,
                folder / LIVE,
                folder / FEATURES,
                benchmark if benchmark.exists() else None,
                version,
                batch_rows,
                workers / spec.name,
            )
        )
    limits = limits or WorkerLimits(
        Settings.model_time_limit_seconds, default_memory_limit_mb(max_parallel)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = run_workers(requests, limits, max_parallel) if requests else []
    finally:
        shutil.rmtree(workers, ignore_errors=True)
    by_name = {o.name: o for o in [*outcomes, *refused]}
    outcomes = [by_name[spec.name] for spec in specs]
    summary = PredictSummary(
        data=", ".join(str(folder) for folder in data_dirs.values()),
        data_version=data_version,
        rows=max((o.rows for o in outcomes), default=0),
        batch_rows=batch_rows,
        seconds=0.0,
        peak_rss_mb=0.0,
        models=[ModelSummary.from_outcome(o, _write_csv(o, out_dir)) for o in outcomes],
    )
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.peak_rss_mb = peak_rss_mb()
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary


def _refused(spec: ModelSpec, version: str, data_version: str) -> ModelOutcome:
    # A model fed another version's columns may still predict, and its predictions mean nothing.
    return ModelOutcome(
        spec.name,
        error=(
            f"model '{spec.name}': its data_version is {version}, and --data holds {data_version} "
            f"(--data-version); predict it from {version}'s files with --data-version {version}, "
            "or with --round-from-numerai, which downloads each version the models use"
        ),
    )


def download_round(
    settings: Settings, folder: Path, versions: list[str], with_benchmarks: bool
) -> tuple[int, dict[str, Path]]:
    """The current round's files of each data version, downloaded by the run's client into
    `folder/round-<n>/<version>`; returns the round's number and each version's folder.

    A file already downloaded into its folder is kept (each is complete once it has its name).
    """
    # The run's modules (numerapi, pandas: about 1.5 s) only for this option.
    from shared.numerai_client import NumeraiClient
    from shared.steps.round_data import RoundFetcher
    from shared.storage.container import safe_name

    numerai = NumeraiClient(settings)
    round_ = numerai.current_round()
    if round_ is None:
        raise DataError("Numerai reports no current round: there are no files to download")
    folders = {}
    for version in versions:
        target = folder / f"round-{round_.number}" / safe_name(version)
        fetcher = RoundFetcher(numerai, target, round_.number, version)
        fetcher.files(with_benchmarks)
        log.info("round %d, data %s: files in %s", round_.number, version, target)
        folders[version] = target
    return round_.number, folders


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    From VmHWM where Linux has it: getrusage's figure survives exec, so a child
    of a large process would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_csv(outcome: ModelOutcome, out_dir: Path) -> Path | None:
    if outcome.csv is None:
        return None
    path = out_dir / (f"{outcome.name}.csv" if outcome.ok else f"{outcome.name}.rejected.csv")
    path.write_text(outcome.csv)
    return path


def main(args: argparse.Namespace) -> int:
    """`python -m shared predict`: exit 0 when every model's predictions are valid, 1 when any
    model failed, 2 when nothing could be predicted."""
    try:
        data_dirs, version = _data(args)
        summary = predict_local(
            data_dirs,
            args.manifest,
            args.out,
            data_version=version,
            batch_rows=args.batch_rows,
            model_names=args.models,
            max_parallel=args.parallel,
        )
    except AppError as exc:
        log.error("%s", exc)
        return 2
    for model in summary.models:
        log.info(
            "%-24s %s %6d rows %7.2f s %6.0f MiB  %s",
            model.name,
            "ok    " if model.ok else "FAILED",
            model.rows,
            model.load_seconds + model.predict_seconds,
            model.peak_memory_mb,
            model.error or model.csv,
        )
    log.info(
        "%d rows in %.1f s; summary in %s", summary.rows, summary.seconds, args.out / "summary.json"
    )
    return 1 if summary.failed else 0


def _data(args: argparse.Namespace) -> tuple[dict[str, Path], str]:
    """Each data version's folder, and the version of entries that name none."""
    if not args.round_from_numerai:
        if args.data is None:
            raise DataError(
                "give --data FOLDER (features.json, live.parquet) or --round-from-numerai"
            )
        version = args.data_version or Settings.data_version
        return {version: args.data}, version
    settings = load_settings(command_environ(args.settings), needs_account=False)
    version = args.data_version or settings.data_version
    manifest = load_manifest(args.manifest).select(args.models)
    models = [spec for spec in manifest.models if not spec.is_ensemble]
    versions = sorted({spec.data_version or version for spec in models})
    pickles = any(spec.format == "numerai_pickle" for spec in models)
    _, folders = download_round(settings, args.data or Path(".work/round"), versions, pickles)
    return folders, version
