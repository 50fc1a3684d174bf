"""One bad model cannot take the others down: crashes, memory, hangs and prying, through the scheduled job.

Each test deploys a fleet of good models plus one that misbehaves, fires the
timer, and checks that the good ones are submitted, the bad one fails with a
reason a participant understands, and the run reports itself failed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from devkit.azurite import ACCOUNT_KEY
from devkit.local_stack import LocalStack
from devkit.synthetic import SyntheticRound
from shared.errors import RunFailed
from shared.report import RunReport
from tests.support import fire_timer, reports

GOOD = ["demo_lightgbm", "demo_onnx"]
REPO = Path(__file__).resolve().parent.parent
# A stand-in for the Functions host: `sh` starts the run's process and waits for it (the
# `exit` after it keeps sh from exec'ing it), an ancestor of every worker with the settings
# (the secrets) in its own environment.
HOST = ["sh", "-c", '"$@"; exit $?', "host", sys.executable, "-m", "shared", "run", "--submit"]

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


def printing(leak: str, fails: bool):
    """A model that prints 30 numbered lines, one with a secret, one with a script, then fails or predicts."""

    def predict_fn(live):
        import sys

        for index in range(30):
            print(f"epoch {index}")
        print(f"connecting with {leak}", file=sys.stderr)
        print("<script>window.__ran = 1</script>")
        if fails:
            raise ValueError("the model gave up")
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return predict_fn


LEAK = f"AccountKey={ACCOUNT_KEY[:40]}"


def test_a_failed_model_s_last_printed_lines_are_in_its_report_line_redacted(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
) -> None:
    fleet_with(
        deployed, small_round, example_models, tmp_path, "chatty", printing(LEAK, fails=True)
    )
    line = fire_and_get_report(deployed)["chatty"]
    assert line["error"] == "model 'chatty': ValueError: the model gave up"
    # The last 20 lines the worker printed: the model's, then the engine's own log line.
    output = line["output"]
    assert len(output) == 20
    assert output[:17] == [f"epoch {index}" for index in range(13, 30)]
    assert output[17] == "connecting with AccountKey=***"
    assert output[18] == "<script>window.__ran = 1</script>"
    assert output[19].endswith(
        "WARNING shared.worker.engine: model 'chatty': ValueError: the model gave up"
    )
    assert "    | epoch 29" in RunReport.from_json(json.dumps(reports(deployed)[-1])).summary()


def test_a_successful_model_s_last_printed_lines_are_logged_at_info(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet_with(
        deployed, small_round, example_models, tmp_path, "chatty", printing(LEAK, fails=False)
    )
    fire_timer()
    [report] = reports(deployed)
    lines = {line["name"]: line for line in report["models"]}
    assert lines["chatty"]["status"] == "submitted" and lines["chatty"]["output"] == []
    [relayed] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
        and r.getMessage().startswith("model chatty: the last lines it printed:")
    ]
    printed = relayed.splitlines()[1:]
    assert printed[:2] == ["epoch 13", "epoch 14"] and "connecting with AccountKey=***" in printed
    assert printed[-1].endswith(
        "INFO shared.worker.engine: model chatty: 503 rows predicted and valid"
    )


def test_a_model_that_writes_past_its_disk_limit_is_stopped_alone_and_its_files_removed(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = tmp_path / "written.txt"

    def fill_disk(live):
        import tempfile
        import time
        from pathlib import Path

        block = b"\1" * 2**20
        # 50 MiB: half in its folder, half where libraries put temporary files.
        places = [Path("scratch.bin").absolute(), Path(tempfile.mkstemp()[1])]
        Path(written).write_text("\n".join(map(str, places)))
        for place in places:
            with place.open("ab") as handle:
                for _ in range(25):
                    handle.write(block)
                    handle.flush()
        time.sleep(60)

    monkeypatch.setenv("MODEL_DISK_LIMIT_MB", "5")
    monkeypatch.setenv("MODEL_TIME_LIMIT_SECONDS", "30")
    fleet_with(deployed, small_round, example_models, tmp_path, "filler", fill_disk)
    try:
        lines = fire_and_get_report(deployed)
        assert lines["filler"]["error"] == (
            "model 'filler': wrote more than MODEL_DISK_LIMIT_MB=5 MiB to its folder while "
            "predicting and was stopped; its files are removed. Raise the limit if the model "
            "needs the space, or make it write less"
        )
        places = [Path(p) for p in written.read_text().splitlines()]
        assert len(places) == 2 and not [p for p in places if p.exists()]
    finally:  # without the limit, the temporary file lands in the machine's /tmp
        for place in written.read_text().splitlines() if written.exists() else []:
            Path(place).unlink(missing_ok=True)


@pytest.fixture
def small_disk(deployed: LocalStack, tmp_path: Path) -> Iterator[Path]:
    """WORK_DIR on a 48 MB filesystem of its own, where this machine lets a test mount one."""
    work_dir = tmp_path / "work"
    work_dir.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(work_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a 48 MB tmpfs needs root with CAP_SYS_ADMIN: {mounted.stderr}")
    try:
        yield work_dir
    finally:  # lazily: a fork server may still have a file open there
        subprocess.run(["umount", "--lazy", str(work_dir)], check=False)


def test_a_model_that_fills_a_small_disk_fails_alone_at_its_default_share(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    small_disk: Path,
) -> None:
    # The reproduction: WORK_DIR on 48 MB, one model writing until the disk is full. Before,
    # every model ended "not finished" with "OSError: [Errno 28] No space left on device".
    def fill_until_full(live):
        from pathlib import Path

        block = b"\1" * 2**20
        try:
            with Path("scratch.bin").open("ab") as handle:
                while True:
                    handle.write(block)
                    handle.flush()
        except OSError:
            pass  # a model that ignores the full disk and answers anyway
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    fleet_with(deployed, small_round, example_models, tmp_path, "filler", fill_until_full)
    lines = fire_and_get_report(deployed)
    assert lines["filler"]["error"].startswith("model 'filler': wrote more than ")
    assert "MODEL_DISK_LIMIT_MB is unset" in lines["filler"]["error"]
    assert shutil.disk_usage(small_disk).used < 24 * 2**20  # its files are gone


def test_a_model_that_fills_the_disk_outside_its_folder_is_named_by_the_upload_check(
    deployed: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    small_disk: Path,
) -> None:
    # Outside its folder nothing counts a model's files; the upload check still fails each model
    # it cannot write alone, saying why, instead of "unexpected error: OSError" for all.
    def fill_work_dir(live):
        import os
        from pathlib import Path

        work_dir = Path(os.getcwd()).parents[3]  # WORK_DIR/rounds/<run id>/workers/<model>
        block = b"\1" * 2**20
        try:
            with (work_dir / "leak.bin").open("ab") as handle:
                while True:
                    handle.write(block)
                    handle.flush()
        except OSError:
            pass
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    fleet_with(deployed, small_round, example_models, tmp_path, "leaker", fill_work_dir)
    with pytest.raises(RunFailed):
        fire_timer()
    [report] = reports(deployed)
    assert deployed.sandbox.submissions == []
    lines = {line["name"]: line for line in report["models"]}
    assert lines.pop("leaker")["status"] == "failed"  # no room left for its own predictions
    assert sorted(lines) == GOOD
    for line in lines.values():
        assert line["status"] == "failed"
        assert line["error"].startswith(
            f"model '{line['name']}': not uploaded for lack of disk space: its CSV needs "
        )
        assert (
            "the free space fell the most (files written outside their folders are not "
            in (line["error"])
        )
        assert "): 'leaker' 4" in line["error"]  # some 40 MiB of the 48
        assert line["predictions_blob"] == f"predictions/round-1200/{line['name']}.csv"
        assert line["error"].endswith(
            " and the next run submits them once WORK_DIR's disk has room"
        )


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


def deploy_pry(
    deployed: LocalStack, small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> Path:
    """The fleet with the prying model added; the file where it will write what it found."""
    findings = tmp_path / "findings.json"
    fleet_with(
        deployed,
        small_round,
        example_models,
        tmp_path,
        "pry",
        pry_everywhere(findings, Path(os.environ["WORK_DIR"])),
    )
    return findings


def secrets_of(deployed: LocalStack) -> list[str]:
    public_id, secret_key = deployed.sandbox.credentials
    return [public_id, secret_key, ACCOUNT_KEY, deployed.azurite.connection_string]


def test_no_process_a_model_can_reach_holds_a_secret(
    deployed: LocalStack, small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    findings = deploy_pry(deployed, small_round, example_models, tmp_path)
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
    findings = deploy_pry(deployed, small_round, example_models, tmp_path)
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
    assert "WARNING: models are not fully isolated" in completed.stderr
    found = json.loads(findings.read_text())
    run, host = found["ancestors"][2:4]  # above the worker and its fork server
    assert str(run) not in found["environs"]  # the run's process is not dumpable
    secret_key = deployed.sandbox.credentials[1]
    holders = [pid for pid, texts in found["environs"].items() if secret_key in texts[0]]
    assert holders == [str(host)]  # what the warning and docs/security.md say remains
    assert "CapEff:\t0000000000000000" in found["status"]
