"""What a model prints: capped on disk, read by its tail, never whole in the run's process (issue #21).

A model that floods its output runs in a fresh Python process that supervises it as a run does,
and reports how far that process's peak resident memory grew while it did: the run's memory must
not depend on what a model prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import psutil
import pytest

from devkit.synthetic import SyntheticRound
from shared.limits import MODEL_LOG_LIMIT_BYTES, WorkerLimits
from shared.manifest import ModelSpec
from shared.worker.output import MARKER_BYTES, CappedLog, last_lines
from shared.worker.protocol import LOG_FILE
from tests.support import predict

REPO = Path(__file__).resolve().parent.parent
FLOOD_MB = 128  # eight times the cap; the whole of it read into a process takes three times as much
FIRST = "the first line the model printed"
LAST = "the last line the model printed"

# Supervises a quiet model (so that the fork server and the run's threads are started), then
# the flood, and prints how much its peak resident memory grew with the flood. The peak is the
# kernel's VmHWM, not ru_maxrss: after an exec, ru_maxrss still counts the forking parent's
# memory (pytest's, here 215 MiB), which would hide the growth below it.
SUPERVISE = """
import json, sys
from pathlib import Path
from shared.limits import WorkerLimits
from shared.manifest import ModelSpec
from shared.worker.protocol import WorkRequest
from shared.worker.supervisor import run_workers

def peak_kib():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))

round_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
def request(name):
    spec = ModelSpec(name=name, file=f"{name}.pkl", format="numerai_pickle", trust_pickle=True)
    return WorkRequest(spec, work / f"{name}.pkl", round_dir / "live.parquet",
                       round_dir / "features.json", None, "v5.3", 64, work / name)
limits = WorkerLimits(seconds=300, memory_mb=4096)
[quiet] = run_workers([request("quiet")], limits)
before = peak_kib()
[flood] = run_workers([request("flood")], limits)
after = peak_kib()
print(json.dumps({"growth_mib": (after - before) / 1024, "quiet": quiet.ok, "ok": flood.ok,
                  "error": flood.error, "output": flood.output, "peak_mib": after / 1024}))
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
    # Read whole, 128 MB of output took the supervising process up by 244 MiB (from 33 MiB).
    assert flood.growth_mib < 16, (
        f"the run's process grew by {flood.growth_mib:.0f} MiB to {flood.result['peak_mib']:.0f}"
    )


def test_the_log_on_disk_is_capped_and_keeps_the_start_and_the_end(flood: Flood) -> None:
    size = flood.log.stat().st_size
    assert size <= MODEL_LOG_LIMIT_BYTES, f"worker.log is {size:,} bytes"
    text = flood.log.read_text(errors="replace")
    assert text.startswith(FIRST)
    assert text.rstrip("\n").endswith(LAST) or LAST in text[-4096:]
    [dropped] = re.findall(r"\[([\d,]+) bytes of output dropped here", text)
    assert int(dropped.replace(",", "")) >= FLOOD_MB * 1_000_000 - MODEL_LOG_LIMIT_BYTES


def test_the_outcome_carries_the_last_lines_the_model_printed(flood: Flood) -> None:
    output = flood.result["output"]
    assert LAST in output[-3:]
    assert sum(len(line) for line in output) <= 4096


def test_a_capped_log_keeps_its_first_and_last_halves_within_its_limit(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / LOG_FILE, limit=4096)
    printed = b"".join(f"line {index}\n".encode() for index in range(10_000))
    with os.fdopen(log.writer, "wb") as writer:
        for start in range(0, len(printed), 1000):
            writer.write(printed[start : start + 1000])
            writer.flush()
            log.drain()
    log.close()
    kept = (tmp_path / LOG_FILE).read_bytes()
    assert len(kept) <= 4096
    head, marker, tail = kept.split(b"\n[", 1)[0], *kept.split(b"\n[", 1)[1].split(b"]\n", 1)
    assert printed.startswith(head) and len(head) == 2048
    assert printed.endswith(tail) and len(tail) == 4096 - 2048 - MARKER_BYTES
    dropped = int(marker.split(b" ")[0].replace(b",", b""))
    assert len(head) + dropped + len(tail) == len(printed)


def test_a_short_log_is_kept_whole(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / LOG_FILE, limit=4096)
    os.write(log.writer, b"a line\nanother\n")
    os.close(log.writer)
    log.close()
    assert (tmp_path / LOG_FILE).read_bytes() == b"a line\nanother\n"
    assert last_lines(tmp_path / LOG_FILE) == ["a line", "another"]


def sleeps_after_printing():
    """A model that prints a line and sleeps past its time limit (made here: pickled by value)."""

    def predict_fn(live):
        import time

        print("about to sleep", flush=True)
        time.sleep(120)

    return predict_fn


def test_a_stopped_worker_s_output_is_kept(small_round: SyntheticRound, tmp_path: Path) -> None:
    path = tmp_path / "sleeper.pkl"
    path.write_bytes(cloudpickle.dumps(sleeps_after_printing()))
    spec = ModelSpec(name="sleeper", file=path.name, format="numerai_pickle", trust_pickle=True)
    limits = WorkerLimits(seconds=3, memory_mb=4096)
    outcome = predict(small_round, [(spec, path)], tmp_path / "work", limits=limits)["sleeper"]
    assert outcome.error.startswith(
        "model 'sleeper': stopped after its limit of 3 s while predicting"
    )
    assert outcome.output == ["about to sleep"]


def leaves_a_child_behind(seconds: str):
    """A model that starts a child which outlives it, holding the worker's output open."""

    def predict_fn(live):
        import subprocess

        subprocess.Popen(["sleep", seconds])
        print("started a child")
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return predict_fn


def test_a_child_holding_the_output_open_does_not_hold_up_the_worker_s_end(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    # Found by its command line: its pid inside the worker's PID namespace means nothing here.
    seconds = f"120.{uuid.uuid4().int % 10**9}"
    path = tmp_path / "parent.pkl"
    path.write_bytes(cloudpickle.dumps(leaves_a_child_behind(seconds)))
    spec = ModelSpec(name="parent", file=path.name, format="numerai_pickle", trust_pickle=True)
    outcome = predict(small_round, [(spec, path)], tmp_path / "work")["parent"]
    [child] = [
        process
        for process in psutil.process_iter(["cmdline"])
        if process.info["cmdline"] == ["sleep", seconds]
    ]
    try:
        # The run had the worker's outcome and output while the child still ran.
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        assert outcome.ok, outcome.error
        assert "started a child" in outcome.output
    finally:
        child.kill()


def sees_only_its_own_output(record: Path, other: Path):
    """A model that notes where its open descriptors lead, once the other worker is running too."""

    def predict_fn(live):
        import json
        import os
        import time
        from pathlib import Path

        targets = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:
                continue  # the listing's own descriptor, closed by now
        Path(record).write_text(json.dumps(targets))
        for _ in range(600):  # both workers alive at once: the later was forked beside the earlier
            if Path(other).exists():
                break
            time.sleep(0.05)
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return predict_fn


def test_a_worker_holds_no_other_worker_s_output(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    models = []
    for name, other in (("left", "right"), ("right", "left")):
        path = tmp_path / f"{name}.pkl"
        function = sees_only_its_own_output(tmp_path / f"{name}.fds", tmp_path / f"{other}.fds")
        path.write_bytes(cloudpickle.dumps(function))
        spec = ModelSpec(name=name, file=path.name, format="numerai_pickle", trust_pickle=True)
        models.append((spec, path))
    outcomes = predict(small_round, models, tmp_path / "work", max_parallel=2)
    assert all(outcome.ok for outcome in outcomes.values())
    for name in ("left", "right"):
        targets = json.loads((tmp_path / f"{name}.fds").read_text())
        pipes = {target for target in targets.values() if target.startswith("pipe:")}
        assert pipes == {targets["1"]} and targets["1"] == targets["2"], targets
        assert not [target for target in targets.values() if target.endswith(LOG_FILE)]
