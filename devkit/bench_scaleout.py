"""`make bench`, queue mode: eight CPU-bound models on one instance (local) against two (queue).

Both sides run the real job against Azurite and the Numerai sandbox, uploads
included, on the live-sized round of bench.py. An "instance" here has one vCPU,
as a 2,048 MB Flex instance does: every model gets one thread
(OMP_NUM_THREADS=1) on both sides, so the two queue instances use this
machine's two cores the way two Flex instances would use one each.

- local: `python -m shared run` with MODEL_EXECUTION=local: one process, the
  models one after another;
- queue: the same command with MODEL_EXECUTION=queue plans and fans out, and two
  instances of devkit/queue_host.py (already started, as warm instances) run
  the tasks; the clock stops when the last task has written the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devkit.local_stack import LocalStack
from devkit.queue_host import QueueHost
from devkit.synthetic import SyntheticRound
from shared.numerai_client import NumeraiClient
from shared.settings import load_settings
from shared.steps.round_data import RoundDataCache

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
INSTANCES = 2
TARGET_RATIO = 0.55
# What a queue task may cost beyond its model's own load and predict (issue #18).
TARGET_TASK_OVERHEAD_SECONDS = 0.5


def scaleout(work: Path, entries: list[dict]) -> list[str]:
    """Wall time of the job in both modes, and what a queue task costs beyond its model; printable lines."""
    models = _fleet_folder(work, entries)
    sets = json.loads((work / "live" / "features.json").read_text())["feature_sets"]
    round_ = SyntheticRound(work / "live", sets, ids=[])
    local, _ = _timed(work, models, round_, "local")
    log.info("local: %.1f s", local)
    queue, report = _timed(work, models, round_, "queue")
    model_seconds = sum(line["seconds"] for line in report["models"])
    overhead = (queue * INSTANCES - model_seconds) / len(entries)
    download, hit = _data_cache(work, models, round_)
    ratio = queue / local
    return [
        f"{len(entries)} deep LightGBM models, one thread each: local {local:.1f} s on one instance, "
        f"queue {queue:.1f} s on {INSTANCES} instances",
        f"{'queue / local wall time':<42} {ratio:8.2f}  (target <= {TARGET_RATIO:g}: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})",
        f"{'per queue task beyond its model (s)':<42} {overhead:8.2f}  (target <= {TARGET_TASK_OVERHEAD_SECONDS:g}: "
        f"{'met' if overhead <= TARGET_TASK_OVERHEAD_SECONDS else 'NOT met'}; queue round trip, plan, lock, "
        "ledger, result, report)",
        f"round data per instance: first task downloads it in {download:.2f} s, each later task finds it in "
        f"{hit * 1000:.1f} ms",
    ]


def _fleet_folder(work: Path, entries: list[dict]) -> Path:
    folder = work / "scaleout-models"
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        target = folder / entry["file"]
        if not target.exists():
            os.link(work / "models" / entry["file"], target)  # gigabytes of trees: no copies
    (folder / "models.json").write_text(json.dumps({"models": entries}))
    return folder


def _timed(work: Path, models: Path, round_: SyntheticRound, execution: str) -> tuple[float, dict]:
    """Seconds from starting the job to its finished report, and the report."""
    with LocalStack() as stack:
        stack.deploy(models, round_)
        environ = {
            **stack.environ(work / f"scaleout-{execution}"),
            "MODEL_EXECUTION": execution,
            "OMP_NUM_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        if execution == "local":
            started = time.perf_counter()
            _run_job(environ)
            return time.perf_counter() - started, {}
        bindings = {stack.task_queue: "function_app:model_task"}
        instances = work / "scaleout-instances"
        shutil.rmtree(instances, ignore_errors=True)  # an earlier bench's instances
        with QueueHost(
            stack.azurite.connection_string,
            bindings,
            work_root=instances,
            environ=environ,
            workers=INSTANCES,
        ) as host:
            started = time.perf_counter()
            _run_job(environ)
            host.wait_until_idle(timeout=1800)
            seconds = time.perf_counter() - started
        container = stack.blob_service.get_container_client(stack.results_container)
        [name] = [
            b.name
            for b in container.list_blobs(name_starts_with="reports/")
            if b.name.endswith(".json")
        ]
        report = json.loads(container.download_blob(name).readall())
        if report["status"] != "succeeded":
            raise SystemExit(
                f"the queue run did not succeed:\n{json.dumps(report, indent=2)[-3000:]}"
            )
        return seconds, report


def _run_job(environ: dict[str, str]) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "shared", "run", "--submit"],
        cwd=REPO,
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"python -m shared run failed:\n{completed.stderr[-3000:]}")


def _data_cache(work: Path, models: Path, round_: SyntheticRound) -> tuple[float, float]:
    """Seconds for a task's first look at the round data (download), and for a later one (cache hit)."""
    with LocalStack() as stack:
        stack.deploy(models, round_)
        settings = load_settings(stack.environ(work / "scaleout-cache"))
        numerai = NumeraiClient(settings)
        round_number = numerai.current_round().number
        shutil.rmtree(work / "scaleout-cache", ignore_errors=True)  # the first task must download
        cache = RoundDataCache(work / "scaleout-cache" / "round-data")
        times = []
        for _ in range(2):  # two tasks, one after the other, on one instance
            started = time.perf_counter()
            cache.fetcher(numerai, round_number, settings.data_version).files(with_benchmarks=True)
            times.append(time.perf_counter() - started)
    return times[0], times[1]
