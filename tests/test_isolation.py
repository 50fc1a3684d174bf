"""One bad model cannot take the others down: crashes, memory, hangs and prying, through the scheduled job.

Each test deploys a fleet of good models plus one that misbehaves, fires the
timer, and checks that the good ones are submitted, the bad one fails with a
reason a participant understands, and the run reports itself failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from devkit.azurite import ACCOUNT_KEY
from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.errors import RunFailed
from tests.support import fire_timer, reports

GOOD = ["demo_lightgbm", "demo_onnx"]
REPO = Path(__file__).resolve().parent.parent
# A stand-in for the Functions host: `sh` starts the run's process and waits for it (the
# `exit` after it keeps sh from exec'ing it), an ancestor of every worker with the settings
# (the secrets) in its own environment.
HOST = ["sh", "-c", '"$@"; exit $?', "host", sys.executable, "-m", "shared", "run"]

pytestmark = pytest.mark.usefixtures("no_secret_anywhere")


def ranked(live):
    return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)


def segfault(live):
    import ctypes

    ctypes.string_at(0)  # reads address 0: a real SIGSEGV, as a mismatched native build gives


def abort(live):
    import os

    os.abort()


def hog_memory(live):
    import numpy

    hoard = []
    while True:  # touches every page, so the memory is really resident
        hoard.append(numpy.ones(25_000_000))


def hang(live):
    import time

    time.sleep(120)


class HangsWhileLoading:
    def __reduce__(self):
        import time

        return (time.sleep, (120,))  # runs when the file is unpickled


def fleet_with(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    name: str,
    payload: object,
) -> None:
    """Deploy the good models and one pickle `name` holding `payload`."""
    models = tmp_path / "fleet"
    shutil.copytree(example_models, models)
    manifest = json.loads((models / "models.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] in GOOD]
    manifest["models"].append(
        {"name": name, "file": f"{name}.pkl", "format": "numerai_pickle", "trust_pickle": True}
    )
    (models / f"{name}.pkl").write_bytes(cloudpickle.dumps(payload))
    (models / "models.json").write_text(json.dumps(manifest))
    deployed.deploy(models, small_round)


def fire_and_get_report(deployed: LocalStack) -> dict:
    with pytest.raises(RunFailed):
        fire_timer()
    [report] = reports(deployed)
    assert report["status"] == "failed"
    lines = {line["name"]: line for line in report["models"]}
    for good in GOOD:
        assert lines[good]["status"] == "submitted", lines[good]
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == GOOD
    return lines


@pytest.mark.parametrize(("payload", "signal_name"), [(segfault, "SIGSEGV"), (abort, "SIGABRT")])
def test_a_crashing_model_fails_alone_with_the_signal_and_its_likely_cause(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    payload,
    signal_name: str,
) -> None:
    fleet_with(deployed, small_round, example_models, tmp_path, "crasher", payload)
    line = fire_and_get_report(deployed)["crasher"]
    assert line["status"] == "failed"
    assert line["error"].startswith(
        f"model 'crasher': the worker crashed with {signal_name} while predicting; "
        "a pickle built on another Python version does this — this app runs Python 3."
    )


def test_a_model_that_outgrows_its_memory_limit_is_stopped_alone(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_MEMORY_LIMIT_MB", "700")
    fleet_with(deployed, small_round, example_models, tmp_path, "hog", hog_memory)
    lines = fire_and_get_report(deployed)
    assert lines["hog"]["error"] == (
        "model 'hog': used more than MODEL_MEMORY_LIMIT_MB=700 MiB while predicting and was stopped; raise the "
        "limit on an instance with more memory, or make the model smaller"
    )
    assert lines["hog"]["peak_memory_mb"] > 700
    assert all(lines[good]["peak_memory_mb"] < 700 for good in GOOD)


@pytest.mark.parametrize(
    ("payload", "phase"), [(HangsWhileLoading(), "loading"), (hang, "predicting")]
)
def test_a_hanging_model_is_stopped_at_its_time_limit_in_any_phase(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    payload,
    phase: str,
) -> None:
    monkeypatch.setenv("MODEL_TIME_LIMIT_SECONDS", "6")
    fleet_with(deployed, small_round, example_models, tmp_path, "sleeper", payload)
    # The message says the watch stopped it at its limit (a model that ended by itself would
    # not read so): exact, where the run's wall time against the 120 s sleep depends on load.
    lines = fire_and_get_report(deployed)
    assert lines["sleeper"]["error"] == (
        f"model 'sleeper': stopped after its limit of 6 s while {phase}; "
        "raise MODEL_TIME_LIMIT_SECONDS if it needs more"
    )


def test_a_model_that_reads_its_environment_finds_no_secret(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    seen = tmp_path / "environment.json"

    def pry(live):
        import json
        import os
        from pathlib import Path

        with open("/proc/self/environ", "rb") as handle:
            initial = handle.read().decode(errors="replace")
        Path(seen).write_text(json.dumps({"environ": dict(os.environ), "initial": initial}))
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    fleet_with(deployed, small_round, example_models, tmp_path, "pry", pry)
    fire_timer()
    assert sorted(s.model_name for s in deployed.sandbox.submissions) == sorted([*GOOD, "pry"])
    found = json.loads(seen.read_text())
    everything = json.dumps(found)
    public_id, secret_key = deployed.sandbox.credentials
    for secret in (public_id, secret_key, ACCOUNT_KEY, deployed.azurite.connection_string):
        assert secret not in everything
    assert not [
        name
        for name in found["environ"]
        if name.startswith(
            ("NUMERAI_", "AZURE", "IDENTITY_", "MSI_", "MODELS_STORAGE", "APPLICATIONINSIGHTS")
        )
    ]


def pry_everywhere(findings: Path, work_dir: Path):
    """A model that reads every environment, command line and work file it can reach."""

    def pry(live):
        import json
        import os
        from pathlib import Path

        def read(path) -> str | None:
            try:
                with open(path, "rb") as handle:
                    return handle.read().decode(errors="replace")
            except OSError:
                return None

        ancestors, pid = [], os.getpid()
        while pid > 0:  # up the parents to pid 1 (or to the edge of what this process can see)
            ancestors.append(pid)
            stat = read(f"/proc/{pid}/stat")
            pid = int(stat.rsplit(")", 1)[1].split()[1]) if stat else 0
        pids = set(ancestors) | {int(p) for p in os.listdir("/proc") if p.isdigit()}
        readable = {}
        for pid in sorted(pids):
            texts = [read(f"/proc/{pid}/{name}") for name in ("environ", "cmdline")]
            if texts[0] is not None:
                readable[pid] = texts
        files = {}
        for folder, _, names in os.walk(work_dir):
            for name in names:
                files[os.path.join(folder, name)] = read(os.path.join(folder, name))
        Path(findings).write_text(
            json.dumps(
                {
                    "ancestors": ancestors,
                    "environs": readable,
                    "files": files,
                    "me": os.getpid(),
                    "beside": os.listdir(".."),  # the run's workers' folders
                    "status": read("/proc/self/status"),
                }
            )
        )
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return pry


def run_under_a_host(*prefix: str) -> subprocess.CompletedProcess:
    """The scheduled job in a process of its own under a HOST that holds the settings.

    Only the host's and the run's environments hold the secrets: not this test's process
    (an ancestor too), where the `deployed` fixture set them after it started.
    """
    return subprocess.run(
        [*prefix, *HOST],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def secrets_of(deployed: LocalStack) -> list[str]:
    public_id, secret_key = deployed.sandbox.credentials
    return [public_id, secret_key, ACCOUNT_KEY, deployed.azurite.connection_string]


def test_no_process_a_model_can_reach_holds_a_secret(
    deployed: LocalStack, small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    findings = tmp_path / "findings.json"
    fleet_with(
        deployed,
        small_round,
        example_models,
        tmp_path,
        "pry",
        pry_everywhere(findings, Path(os.environ["WORK_DIR"])),
    )
    completed = run_under_a_host()
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(findings.read_text())
    assert found["ancestors"][0] == found["me"]
    assert str(found["me"]) in found["environs"]  # it could read something: its own
    for secret in secrets_of(deployed):
        for form in (secret, secret[::-1]):
            holders = [pid for pid, texts in found["environs"].items() if form in "\0".join(texts)]
            assert not holders, f"a model read a secret in the environment of {holders}"
            leaked = [path for path, text in found["files"].items() if text and form in text]
            assert not leaked, f"a model read a secret in {leaked}"
    # No capability left in the worker: nothing lets it past the kernel's checks.
    assert "CapEff:\t0000000000000000" in found["status"]
    # The other models' folders (they ran first) are out of its sight.
    assert found["beside"] == ["pry"]


def test_without_namespaces_the_run_warns_and_only_the_host_stays_readable(
    deployed: LocalStack, small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    findings = tmp_path / "findings.json"
    fleet_with(
        deployed,
        small_round,
        example_models,
        tmp_path,
        "pry",
        pry_everywhere(findings, Path(os.environ["WORK_DIR"])),
    )
    # The host in a user namespace of its own where no more can be made, as a locked-down
    # kernel (a sysctl, a seccomp profile) would have it, and without capabilities, as an app
    # that does not run as root (a worker cannot read a process that has capabilities it lacks).
    refuse_namespaces = (
        "echo 0 > /proc/sys/user/max_user_namespaces && "
        'exec setpriv --bounding-set=-all --inh-caps=-all "$@"'
    )
    completed = run_under_a_host(
        "unshare", "--user", "--map-root-user", "sh", "-c", refuse_namespaces, "refuse"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "WARNING shared.worker.supervisor: models are not fully isolated" in completed.stderr
    found = json.loads(findings.read_text())
    run, host = found["ancestors"][2:4]  # above the worker and its fork server
    assert str(run) not in found["environs"]  # the run's process is not dumpable
    secret_key = deployed.sandbox.credentials[1]
    holders = [pid for pid, texts in found["environs"].items() if secret_key in texts[0]]
    assert holders == [str(host)]  # what the warning and docs/security.md say remains
    assert "CapEff:\t0000000000000000" in found["status"]
