"""`python -m devkit.local_stack`: the local services for people, and what they print."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent


def test_the_local_stack_serves_the_command_line_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    stack = subprocess.Popen(
        [sys.executable, "-m", "devkit.local_stack", "--work", str(tmp_path), "--rows", "300"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        printed = []
        for line in stack.stdout:
            printed.append(line)
            if line.startswith("Ready."):
                break
        assert printed and printed[-1].startswith("Ready."), "".join(printed)
        assert f"python -m shared run --test-mode --settings {settings}" in "".join(printed)

        run = subprocess.run(
            [sys.executable, "-m", "shared", "run", "--test-mode", "--settings", str(settings)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stderr.count(" validated ") == 3, run.stderr

        values = json.loads(settings.read_text())["Values"]
        blob = urlsplit(values["MODELS_STORAGE_CONNECTION_STRING"].split("BlobEndpoint=")[1])
        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0
        assert "Stopped Azurite and the Numerai sandbox." in stack.stdout.read()
        with socket.socket() as probe:
            assert probe.connect_ex((blob.hostname, blob.port)) != 0, "Azurite still listens"
    finally:
        stack.kill()
        stack.wait()
