"""What a model prints: capped on disk, read by its tail, never whole in the run's process (issue #21).

A model that floods its output runs in a fresh Python process that supervises it as a run does,
and reports how far that process's peak resident memory grew while it did: the run's memory must
not depend on what a model prints.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pytest

from devkit.synthetic import SyntheticRound
from shared.limits import MODEL_LOG_LIMIT_BYTES
from shared.worker.protocol import LOG_FILE

REPO = Path(__file__).resolve().parent.parent
FLOOD_MB = 128  # eight times the cap; the whole of it read into a process takes three times as much
FIRST = "the first line the model printed"
LAST = "the last line the model printed"

# Supervises a quiet model (so that the fork server and the run's threads are started), then
# the flood, and prints how much its peak resident memory grew with the flood.
SUPERVISE = """
import json, resource, sys
from pathlib import Path
from shared.limits import WorkerLimits
from shared.manifest import ModelSpec
from shared.worker.protocol import WorkRequest
from shared.worker.supervisor import run_workers

round_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
def request(name):
    spec = ModelSpec(name=name, file=f"{name}.pkl", format="numerai_pickle", trust_pickle=True)
    return WorkRequest(spec, work / f"{name}.pkl", round_dir / "live.parquet",
                       round_dir / "features.json", None, "v5.3", 64, work / name)
limits = WorkerLimits(seconds=300, memory_mb=4096)
[quiet] = run_workers([request("quiet")], limits)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
[flood] = run_workers([request("flood")], limits)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mib": (after - before) / 1024, "quiet": quiet.ok, "ok": flood.ok,
                  "error": flood.error, "output": flood.output}))
"""


def printing(megabytes: int):
    """A model that prints a line, `megabytes` lines of a million characters, a last line, and predicts."""

    def predict_fn(live):
        import sys

        print(FIRST)
        line = "x" * 999_999 + "\n"
        for _ in range(megabytes):
            sys.stdout.write(line)
        print(LAST, file=sys.stderr)
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return predict_fn


@dataclass(frozen=True)
class Flood:
    growth_mib: float  # how far the supervising process's peak memory grew with the flood
    result: dict
    log: Path


@pytest.fixture(scope="module")
def flood(small_round: SyntheticRound, tmp_path_factory: pytest.TempPathFactory) -> Flood:
    work = tmp_path_factory.mktemp("flood")
    (work / "quiet.pkl").write_bytes(cloudpickle.dumps(printing(0)))
    (work / "flood.pkl").write_bytes(cloudpickle.dumps(printing(FLOOD_MB)))
    finished = subprocess.run(
        [sys.executable, "-c", SUPERVISE, str(small_round.directory), str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.splitlines()[-1])
    assert result["quiet"] and result["ok"], result["error"]
    return Flood(result["growth_mib"], result, work / "flood" / LOG_FILE)


def test_what_a_model_prints_does_not_grow_the_run_s_memory(flood: Flood) -> None:
    # Read whole, 128 MB of output took the supervising process up by more than 300 MiB.
    assert flood.growth_mib < 32, f"the run's process grew by {flood.growth_mib:.0f} MiB"


def test_the_log_on_disk_is_capped_and_keeps_the_start_and_the_end(flood: Flood) -> None:
    size = flood.log.stat().st_size
    assert size <= MODEL_LOG_LIMIT_BYTES + 1024, f"worker.log is {size:,} bytes"
    text = flood.log.read_text(errors="replace")
    assert text.startswith(FIRST)
    assert text.rstrip("\n").endswith(LAST) or LAST in text[-4096:]
    [dropped] = re.findall(r"\[([\d,]+) bytes of output dropped here", text)
    assert int(dropped.replace(",", "")) >= FLOOD_MB * 1_000_000 - MODEL_LOG_LIMIT_BYTES


def test_the_outcome_carries_the_last_lines_the_model_printed(flood: Flood) -> None:
    output = flood.result["output"]
    assert LAST in output[-3:]
    assert sum(len(line) for line in output) <= 4096
