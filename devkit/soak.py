"""`make soak`: 30 consecutive rounds in the sandbox with faults injected at random.

Each round the timer fires, sometimes into a fault drawn from a fixed seed
(an API outage, a failing upload, a broken model, storage answering 503,
create_submission answering late or 502, a run killed right after
create_submission (also while Numerai's list lags behind it), a lost lease, a manifest entry changed after a failed
upload, ...), and fires again once the fault is gone, as a user's daily
schedule would the next time. At the end it checks, and prints:
- every round's models were each submitted exactly once, or the round's
  reports say why not;
- every upload is what the manifest in force at the time predicts (made
  beforehand by test runs of each manifest version);
- the ledger matches what the sandbox received, submission for submission;
- no temporary files were left behind and memory did not keep growing.
Exit code 0 only if all of that holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from azure.storage.blob import BlobLeaseClient

from devkit.example_models import DEMO_PLAN, write_example_models
from devkit.fault_proxy import FaultProxy
from devkit.local_stack import LocalStack
from devkit.synthetic import write_round
from shared.errors import RunFailed
from shared.report import Mode, RunReport
from shared.run.job import run_job
from shared.storage import Results
from shared.storage.archive import TEST_PREDICTIONS
from shared.triggers.executors import executor_for

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work" / "soak"


@dataclass
class SoakFigures:
    """What the soak run saw, and whether everything added up."""

    rounds: int = 0
    faults: Counter = field(default_factory=Counter)
    firings: int = 0
    failed_firings: int = 0
    submissions: int = 0
    unexplained: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wrong_uploads: list[str] = field(default_factory=list)
    ledger_matches: bool = False
    leftover_folders: int = 0
    rss_mb: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        # Memory: the last rounds may not hold much more than the first ones after warm-up.
        steady = len(self.rss_mb) < 6 or max(self.rss_mb[-3:]) <= max(self.rss_mb[2:5]) * 1.10
        return (
            self.ledger_matches
            and not self.unexplained
            and not self.duplicates
            and not self.wrong_uploads
            and self.leftover_folders == 0
            and steady
        )


class _Manifest:
    """The deployed manifest, in one of two versions that differ in demo_onnx's columns."""

    def __init__(self, stack: LocalStack) -> None:
        self._blobs = stack.blob_service.get_container_client(stack.models_container)
        self.versions = [json.loads(self._blobs.download_blob("models.json").readall())]
        changed = json.loads(json.dumps(self.versions[0]))
        entry = next(m for m in changed["models"] if m["name"] == "demo_onnx")
        entry["features"] = list(reversed(_feature_set(stack, entry["features"])))
        self.versions.append(changed)
        self.current = 0

    def use(self, version: int) -> None:
        """Deploy a version of the manifest."""
        self._blobs.upload_blob("models.json", json.dumps(self.versions[version]), overwrite=True)
        self.current = version

    def toggle(self) -> None:
        """Deploy the other version: the same model file, other predictions."""
        self.use(1 - self.current)


def _feature_set(stack: LocalStack, name: str) -> list[str]:
    """The columns of a feature set in the round's features.json."""
    features = json.loads(Path(stack.sandbox.datasets["v5.3/features.json"]).read_text())
    return features["feature_sets"][name]


def _expected(stack: LocalStack, manifest: _Manifest) -> dict[tuple[int, str], str]:
    """What each model predicts under each manifest version: test runs, which upload nothing."""
    results = Results.open(stack.blob_service, stack.results_container)
    expected = {}
    for version in range(len(manifest.versions)):
        manifest.use(version)
        report = run_job(Mode.TEST, executor_for)
        for line in report.models:
            csv = results.archive.read(report.round_number, line.name, TEST_PREDICTIONS)
            if csv is not None:
                expected[(version, line.name)] = csv
    manifest.use(0)
    return expected


def _faults(
    stack: LocalStack, proxy: FaultProxy, manifest: _Manifest, figures: SoakFigures
) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """Each fault: how to inject it, and how to take it away again."""
    sandbox = stack.sandbox
    models = stack.blob_service.get_container_client(stack.models_container)
    original = models.download_blob("demo_onnx.onnx").readall()

    def corrupt() -> None:
        models.upload_blob("demo_onnx.onnx", b"corrupted", overwrite=True)

    def repair() -> None:
        models.upload_blob("demo_onnx.onnx", original, overwrite=True)

    def set_fault(name: str, value: object) -> Callable[[], None]:
        return lambda: setattr(sandbox.faults, name, value)

    def set_proxy(name: str, value: object) -> Callable[[], None]:
        return lambda: setattr(proxy.faults, name, value)

    def unanswered(list_fails: bool) -> Callable[[], None]:
        def inject() -> None:
            os.environ["NUMERAI_TIMEOUT_SECONDS"] = "1"
            sandbox.faults.create_submission_delay_seconds = 1.5
            if list_fails:
                sandbox.faults.submissions_status = 503

        return inject

    def clear() -> None:
        sandbox.faults.reset()
        sandbox.on_request = None
        os.environ["NUMERAI_TIMEOUT_SECONDS"] = "10"

    def clear_and_change_manifest() -> None:
        clear()
        manifest.toggle()  # the healing run must predict again, not upload the archive

    def kill_after_create_submission() -> None:
        # In place of this firing's in-process run: a real process, killed once
        # create_submission has answered and before the ledger is written.
        victim = subprocess.Popen(
            [sys.executable, "-m", "shared", "run", "--submit"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def kill(entry: str) -> None:
            if entry == "graphql submissions" and victim.poll() is None:
                victim.send_signal(signal.SIGKILL)
                victim.wait(30)

        sandbox.on_request = kill
        victim.wait(300)
        sandbox.on_request = None

    def kill_while_the_list_lags() -> None:
        # The next firing comes before Numerai lists the killed run's submission: it must hold
        # the model, not submit it again (issue #21, item 6); the healing firing finds it.
        sandbox.faults.list_lag_seconds = 3600
        kill_after_create_submission()

    def lose_the_lease() -> None:
        lock = stack.blob_service.get_blob_client(stack.results_container, "locks/scheduled-run")

        def break_in(entry: str) -> None:
            if entry == "graphql submission_upload_auth":
                sandbox.on_request = None
                BlobLeaseClient(lock).break_lease(lease_break_period=0)
                _fire(figures)  # a second run takes the lock while the first still works

        sandbox.on_request = break_in

    return {
        "api 5xx, recovers": (set_fault("api_5xx", 2), clear),
        "api down": (set_fault("api_5xx_forever", True), clear),
        "upload PUT refused": (set_fault("put_status", 403), clear),
        "create_submission refused": (
            set_fault("create_submission_error", "Internal server error"),
            clear,
        ),
        "create_submission answers late": (unanswered(list_fails=False), clear),
        "create_submission late, submissions list down": (unanswered(list_fails=True), clear),
        "create_submission 502 after creating": (set_fault("create_submission_status", 502), clear),
        "submission not listed": (set_fault("hide_submissions", True), clear),
        "killed after create_submission": (kill_after_create_submission, clear),
        "killed after create_submission, list lagging": (kill_while_the_list_lags, clear),
        "lease lost mid-run": (lose_the_lease, clear),
        "manifest entry changed after a failed upload": (
            set_fault("put_status", 403),
            clear_and_change_manifest,
        ),
        "download fails": (set_fault("download_status", 500), clear),
        "graphql error once": (set_fault("graphql_error", "Something went wrong"), clear),
        "corrupt model": (corrupt, repair),
        "storage 5xx, recovers": (
            set_proxy("fail_next", 1),
            lambda: setattr(proxy.faults, "fail_next", 0),
        ),
    }


def _draw(rng: random.Random, faults: list[str], rounds: int) -> list[str | None]:
    """One fault (or none) per round, at random, yet every kind at least once when rounds allow."""
    quiet = [None] * (rounds // 4)  # about a quarter of the rounds run without a fault
    drawn = (faults + quiet)[:rounds]
    drawn += [rng.choice([*faults, None]) for _ in range(rounds - len(drawn))]
    rng.shuffle(drawn)
    return drawn


def _fire(figures: SoakFigures) -> None:
    from azure.functions.timer import TimerRequest

    from function_app import scheduled_submission

    figures.firings += 1
    try:
        scheduled_submission.build().get_user_function()(TimerRequest(past_due=False))
    except RunFailed:
        figures.failed_firings += 1


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soak(rounds: int, seed: int, work: Path) -> SoakFigures:
    """Run `rounds` rounds with random faults; return the figures."""
    rng = random.Random(seed)
    figures = SoakFigures()
    data = write_round(work / "round", rows=600, n_features=60, seed=seed)
    write_example_models(work / "models", data.feature_sets, DEMO_PLAN)
    with LocalStack() as stack, FaultProxy(stack.azurite.port) as proxy:
        stack.deploy(work / "models", data)
        os.environ.update(stack.environ(work / "app"))
        os.environ["MODELS_STORAGE_CONNECTION_STRING"] = stack.azurite.connection_string.replace(
            f":{stack.azurite.port}/", f":{proxy.port}/"
        )
        manifest = _Manifest(stack)
        expected = _expected(stack, manifest)
        faults = _faults(stack, proxy, manifest, figures)
        for number, name in enumerate(_draw(rng, list(faults), rounds)):
            if number:
                stack.sandbox.open_new_round()
            figures.rounds += 1
            if name is not None:
                inject, remove = faults[name]
                figures.faults[name] += 1
                _watched(
                    figures,
                    stack,
                    expected,
                    manifest,
                    lambda inject=inject: (inject(), _fire(figures)),
                )
                remove()
            _watched(figures, stack, expected, manifest, lambda: _fire(figures))
            if rng.random() < 0.3:
                _watched(
                    figures, stack, expected, manifest, lambda: _fire(figures)
                )  # a timer firing twice
            figures.rss_mb.append(round(_rss_mb(), 1))
        _check(figures, stack, work / "app")
    return figures


def _watched(
    figures: SoakFigures,
    stack: LocalStack,
    expected: dict[tuple[int, str], str],
    manifest: _Manifest,
    firing: Callable[[], object],
) -> None:
    """Fire, then check that each new upload is what the manifest in force predicts."""
    before = len(stack.sandbox.submissions)
    version = manifest.current
    firing()
    for submission in stack.sandbox.submissions[before:]:
        if submission.csv.decode() != expected.get((version, submission.model_name)):
            figures.wrong_uploads.append(f"round {submission.round} {submission.model_name}")


def _check(figures: SoakFigures, stack: LocalStack, work_dir: Path) -> None:
    received = Counter((s.round, s.model_name) for s in stack.sandbox.submissions)
    figures.submissions = sum(received.values())
    figures.duplicates = [
        f"round {r} {m}: {n} submissions" for (r, m), n in received.items() if n > 1
    ]
    ledger = Results.open(stack.blob_service, stack.results_container).ledger.records()
    figures.ledger_matches = {(r.round_number, r.model_name, r.submission_id) for r in ledger} == {
        (s.round, s.model_name, s.id) for s in stack.sandbox.submissions
    }
    reports = _reports(stack)
    for round_number in {r.round_number for r in reports if r.round_number is not None}:
        for model in (name for name, _, _ in DEMO_PLAN):
            if received[(round_number, model)] == 1:
                continue
            said = [
                m.error
                for r in reports
                if r.round_number == round_number
                for m in r.models
                if m.name == model and m.error
            ]
            if not said:
                figures.unexplained.append(
                    f"round {round_number} {model}: not submitted, no reason given"
                )
    # Every run's folder must be gone; the folder of folders keeps only its sweep lock.
    rounds = work_dir / "rounds"
    figures.leftover_folders = (
        sum(1 for folder in rounds.iterdir() if folder.is_dir()) if rounds.exists() else 0
    )


def _reports(stack: LocalStack) -> list[RunReport]:
    container = stack.blob_service.get_container_client(stack.results_container)
    return [
        RunReport.from_json(container.download_blob(blob.name).readall())
        for blob in container.list_blobs(name_starts_with="reports/")
        if blob.name.endswith(".json")
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m devkit.soak")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the runs' own logs would drown the figures
    figures = soak(args.rounds, args.seed, args.work)
    lines = [
        f"rounds: {figures.rounds}, timer firings: {figures.firings} ({figures.failed_firings} reported failed)",
        "faults injected: "
        + (", ".join(f"{k} ×{v}" for k, v in sorted(figures.faults.items())) or "none"),
        f"submissions received by Numerai: {figures.submissions}",
        f"models submitted twice in a round: {len(figures.duplicates)} {figures.duplicates or ''}",
        f"uploads that differ from what the manifest in force predicts: {len(figures.wrong_uploads)} "
        f"{figures.wrong_uploads or ''}",
        f"model-rounds neither submitted nor explained: {len(figures.unexplained)} {figures.unexplained or ''}",
        f"ledger matches Numerai's records exactly: {figures.ledger_matches}",
        f"run folders left: {figures.leftover_folders}",
        f"RSS MiB by round: first {figures.rss_mb[:3]}, last {figures.rss_mb[-3:]}",
        f"all checks hold: {figures.ok}",
    ]
    print("\n".join(lines))
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
