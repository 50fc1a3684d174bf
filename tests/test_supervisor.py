"""The supervisor's view of a worker's processes, and the environment it gives workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle

from devkit.synthetic import SyntheticRound
from shared.limits import WorkerLimits
from shared.manifest import ModelSpec
from shared.worker.supervisor import _tree_rss_mb, process_tree, worker_environment
from tests.support import predict


def test_the_process_tree_holds_children_and_grandchildren() -> None:
    # A shell whose child is a sleep, whose sibling is another shell with a sleep of its own.
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait"])
    try:
        for _ in range(100):
            tree = process_tree(parent.pid)
            if len(tree) == 4:
                break
            time.sleep(0.05)  # the shells are still starting their children
        assert tree[0] == parent.pid and len(tree) == 4
        assert _tree_rss_mb(parent.pid) > 0
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()


def test_workers_get_no_secret_and_the_run_s_import_path(monkeypatch) -> None:
    monkeypatch.setenv("NUMERAI_SECRET_KEY", "s3cret")
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    monkeypatch.setenv("LANG", "C.UTF-8")
    environment = worker_environment()
    assert "NUMERAI_SECRET_KEY" not in environment and "IDENTITY_HEADER" not in environment
    assert environment["LANG"] == "C.UTF-8"
    assert all(
        path in environment["PYTHONPATH"].split(os.pathsep)
        for path in sys.path
        if path and os.path.isdir(path)
    )


def test_a_model_that_writes_past_its_disk_limit_and_exits_at_once_is_still_caught(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    # It writes and returns between two samples: its folder is measured again once it exits.
    def write_and_return(live):
        from pathlib import Path

        Path("scratch.bin").write_bytes(b"\1" * 20 * 2**20)
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    def chatty(live):  # its log is bounded apart (MODEL_LOG_LIMIT_BYTES): it does not count
        print("x" * 2**20 * 8, flush=True)
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    models = []
    for name, payload in (("quick", write_and_return), ("chatty", chatty)):
        (tmp_path / f"{name}.pkl").write_bytes(cloudpickle.dumps(payload))
        spec = ModelSpec(name=name, file=f"{name}.pkl", format="numerai_pickle", trust_pickle=True)
        models.append((spec, tmp_path / f"{name}.pkl"))
    limits = WorkerLimits(seconds=300, memory_mb=4096, disk_mb=5)
    outcomes = predict(small_round, models, tmp_path / "run", limits=limits)
    assert outcomes["quick"].error is not None and outcomes["quick"].error.startswith(
        "model 'quick': wrote more than MODEL_DISK_LIMIT_MB=5 MiB to its folder while "
    )
    assert outcomes["chatty"].ok, outcomes["chatty"].error
    # Read back, nothing of either worker is left on the disk but its log, bounded apart.
    folders = list((tmp_path / "run" / "workers").iterdir())
    assert [sorted(p.name for p in folder.iterdir()) for folder in folders] == [["worker.log"]] * 2
