"""The warm fork servers: reused between runs, replaced when they stop or age, kept from TensorFlow.

The models here report which server forked them and whether TensorFlow was
already in their process, so each test sees from the inside what the pool did.
A worker cannot see its server (it is outside the worker's PID namespace, see
shared/worker/isolation.py), but each server's workers share a PID namespace
of their own, whose pid 1 the server started with it: the two name the server
(a namespace's number alone is reused once it has ended), and `server_pid`
finds it from outside.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import psutil
import pytest

from devkit.example_models import write_keras
from devkit.synthetic import SyntheticRound
from shared.manifest import ModelSpec
from shared.worker.pool import WorkerPool
from shared.worker.protocol import ModelOutcome, WorkRequest
from shared.worker.supervisor import run_workers, run_workers_in, worker_environment
from tests.support import GENEROUS, fork_servers, predict, work_requests

REPO = Path(__file__).resolve().parent.parent


def reporting(report: Path):
    """A model that writes its fork server's namespace and whether TensorFlow is imported to `report`."""

    def predict_fn(live):
        import json
        import os
        import sys
        from pathlib import Path

        with open("/proc/1/stat") as stat:  # the namespace's init, started with the server
            started = stat.read().rsplit(")", 1)[1].split()[19]
        server = f"{os.readlink('/proc/self/ns/pid')} {started}"
        Path(report).write_text(
            json.dumps({"server": server, "tensorflow": "tensorflow" in sys.modules})
        )
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return predict_fn


def segfault(live):
    import ctypes

    ctypes.string_at(0)


def pickled(directory: Path, name: str, function) -> tuple[ModelSpec, Path]:
    path = directory / f"{name}.pkl"
    path.write_bytes(cloudpickle.dumps(function))
    return ModelSpec(name=name, file=path.name, format="numerai_pickle", trust_pickle=True), path


class Reporter:
    """Reporting models, one file per run, and what they reported."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def model(self, name: str = "reporter") -> tuple[ModelSpec, Path]:
        self.count += 1
        return pickled(
            self.directory,
            f"{name}_{self.count}",
            reporting(self.directory / f"{name}_{self.count}.json"),
        )

    def seen(self, model: tuple[ModelSpec, Path]) -> dict:
        return json.loads((self.directory / f"{model[0].name}.json").read_text())


@pytest.fixture
def reporter(tmp_path: Path) -> Reporter:
    return Reporter(tmp_path)


def run_in(
    pool: WorkerPool, round_: SyntheticRound, models: list[tuple[ModelSpec, Path]], work: Path
) -> dict[str, ModelOutcome]:
    return {o.name: o for o in run_workers_in(pool, work_requests(round_, models, work), GENEROUS)}


@pytest.fixture
def own_pool() -> Iterator[list[WorkerPool]]:
    """Pools a test makes with bounds of its own, closed after it."""
    pools: list[WorkerPool] = []
    yield pools
    for pool in pools:
        pool.close()


def wait_until_dead(pid: int) -> None:
    """Until `pid` has exited (a zombie counts: it runs nothing)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def namespace_of(pid: int) -> str | None:
    """The PID namespace the children of `pid` are in (None: gone, or not this user's)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid_for_children")
    except OSError:
        return None


def server_pid(server: str) -> int:
    """The pid of this process's fork server that a model reported (its workers' namespace first)."""
    namespace = server.split()[0]
    [pid] = [child.pid for child in fork_servers() if namespace_of(child.pid) == namespace]
    return pid


def test_consecutive_runs_reuse_one_warm_server(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path
) -> None:
    first, second = reporter.model(), reporter.model()
    assert predict(small_round, [first], tmp_path / "one")[first[0].name].ok
    assert predict(small_round, [second], tmp_path / "two")[second[0].name].ok
    assert reporter.seen(first)["server"] == reporter.seen(second)["server"]


def test_runs_side_by_side_share_the_server(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path
) -> None:
    models = [reporter.model(), reporter.model()]
    outcomes: dict[str, ModelOutcome] = {}

    def run(model: tuple[ModelSpec, Path]) -> None:
        outcomes.update(predict(small_round, [model], tmp_path / model[0].name))

    threads = [threading.Thread(target=run, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(outcome.ok for outcome in outcomes.values()), outcomes
    assert reporter.seen(models[0])["server"] == reporter.seen(models[1])["server"]


def test_a_server_killed_between_runs_is_replaced(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path
) -> None:
    first, second = reporter.model(), reporter.model()
    assert predict(small_round, [first], tmp_path / "one")[first[0].name].ok
    killed = server_pid(reporter.seen(first)["server"])
    psutil.Process(killed).send_signal(signal.SIGKILL)  # as the kernel's OOM killer would
    wait_until_dead(killed)
    outcome = predict(small_round, [second], tmp_path / "two")[second[0].name]
    assert outcome.ok, outcome.error
    assert reporter.seen(second)["server"] != reporter.seen(first)["server"]


def test_a_crashing_model_fails_alone_and_the_warm_server_goes_on(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path
) -> None:
    before, after = reporter.model(), reporter.model()
    assert predict(small_round, [before], tmp_path / "one")[before[0].name].ok
    outcomes = predict(
        small_round, [pickled(tmp_path, "crasher", segfault), after], tmp_path / "two"
    )
    assert outcomes["crasher"].error.startswith(
        "model 'crasher': the worker crashed with SIGSEGV while predicting"
    )
    assert outcomes[after[0].name].ok, outcomes[after[0].name].error
    assert reporter.seen(after)["server"] == reporter.seen(before)["server"]


@pytest.mark.parametrize(
    "bounds", [{"max_age_seconds": 0.0}, {"max_rss_mb": 1.0}], ids=["age", "rss"]
)
def test_a_server_past_its_bound_is_retired_between_runs(
    small_round: SyntheticRound,
    reporter: Reporter,
    tmp_path: Path,
    own_pool: list[WorkerPool],
    bounds: dict,
) -> None:
    pool = WorkerPool(**bounds)
    own_pool.append(pool)
    first, second = reporter.model(), reporter.model()
    assert run_in(pool, small_round, [first], tmp_path / "one")[first[0].name].ok
    retired = server_pid(reporter.seen(first)["server"])
    assert run_in(pool, small_round, [second], tmp_path / "two")[second[0].name].ok
    assert reporter.seen(second)["server"] != reporter.seen(first)["server"]
    wait_until_dead(retired)  # closed, not left running


def test_a_server_past_its_bound_is_not_retired_while_a_run_uses_it(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path, own_pool: list[WorkerPool]
) -> None:
    pool = WorkerPool(max_age_seconds=0.0)
    own_pool.append(pool)
    first, second = reporter.model(), reporter.model()
    # Both models in one run: the bound is checked when a run borrows the server, not in between.
    outcomes = run_in(pool, small_round, [first, second], tmp_path / "one")
    assert all(outcome.ok for outcome in outcomes.values())
    assert reporter.seen(first)["server"] == reporter.seen(second)["server"]


def test_a_changed_environment_gets_a_new_server(
    small_round: SyntheticRound,
    reporter: Reporter,
    tmp_path: Path,
    own_pool: list[WorkerPool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = WorkerPool()
    own_pool.append(pool)
    first, second = reporter.model(), reporter.model()
    assert run_in(pool, small_round, [first], tmp_path / "one")[first[0].name].ok
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # passed to workers: the old server's would be stale
    assert "OMP_NUM_THREADS" in worker_environment()
    assert run_in(pool, small_round, [second], tmp_path / "two")[second[0].name].ok
    assert reporter.seen(second)["server"] != reporter.seen(first)["server"]


def test_a_server_that_imported_tensorflow_never_forks_a_plain_worker(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path, own_pool: list[WorkerPool]
) -> None:
    pool = WorkerPool()
    own_pool.append(pool)
    write_keras(tmp_path / "mlp.keras", small_round.feature_sets["small"], hidden=(8,))
    keras_model = (
        ModelSpec(name="mlp", file="mlp.keras", format="keras", features="small"),
        tmp_path / "mlp.keras",
    )
    before, beside, after = reporter.model(), reporter.model(), reporter.model()
    assert run_in(pool, small_round, [before], tmp_path / "one")[before[0].name].ok
    outcomes = run_in(pool, small_round, [keras_model, beside], tmp_path / "two")
    assert all(outcome.ok for outcome in outcomes.values()), outcomes
    assert run_in(pool, small_round, [after], tmp_path / "three")[after[0].name].ok
    seen = [reporter.seen(model) for model in (before, beside, after)]
    assert [s["tensorflow"] for s in seen] == [False, False, False]
    assert len({s["server"] for s in seen}) == 1  # the plain server, warm throughout
    # The TensorFlow server was closed with the run that needed it: no server left holds TensorFlow
    # (which the check does see where it is: this process imported it to train the model).
    assert holds_tensorflow(psutil.Process())
    assert [server.pid for server in fork_servers() if holds_tensorflow(server)] == []


def holds_tensorflow(process: psutil.Process) -> bool:
    return any("tensorflow" in region.path for region in process.memory_maps())


def test_no_server_outlives_its_process(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path
) -> None:
    model = reporter.model()
    script = (
        "import pickle, sys\n"
        "from shared.limits import WorkerLimits\n"
        "from shared.worker.supervisor import run_workers\n"
        "requests = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "[outcome] = run_workers(requests, WorkerLimits(seconds=300, memory_mb=4096))\n"
        "sys.exit(0 if outcome.ok else outcome.error)\n"
    )
    requests = tmp_path / "requests.pickle"
    requests.write_bytes(cloudpickle.dumps(work_requests(small_round, [model], tmp_path / "work")))
    temporary = tmp_path / "tmp"  # where the pool makes its servers' folder
    temporary.mkdir()
    completed = subprocess.run(
        [sys.executable, "-c", script, str(requests)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(temporary)},
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    namespace = reporter.seen(model)["server"].split()[0]
    # Closed before the process ended (at exit, not only at its pipe's end): no folder, no server.
    assert list(temporary.iterdir()) == []
    assert not [
        process.pid
        for process in psutil.process_iter()
        if namespace_of(process.pid) == namespace and process.status() != psutil.STATUS_ZOMBIE
    ]


def test_a_request_with_relative_paths_runs_although_the_worker_starts_elsewhere(
    small_round: SyntheticRound, reporter: Reporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's folder is the pool's and each worker starts in its own: paths travel absolute.
    spec, path = reporter.model()
    shutil.copytree(small_round.directory, tmp_path / "round")
    monkeypatch.chdir(tmp_path)
    relative = Path("round")
    request = WorkRequest(
        spec,
        Path(path.name),
        relative / "live.parquet",
        relative / "features.json",
        None,
        "v5.3",
        64,
        Path("work") / spec.name,
    )
    [outcome] = run_workers([request], GENEROUS)
    assert outcome.ok, outcome.error
