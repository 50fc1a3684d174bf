"""The supervisor's view of a worker's processes, and the environment it gives workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from shared.worker.supervisor import _tree_rss_mb, process_tree, worker_environment


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
