"""The engine with real models of every format, each in its worker: any batch size, failures isolated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import pytest

from devkit.example_models import write_onnx_linear, write_onnx_stump
from devkit.synthetic import SyntheticRound, write_round
from shared.manifest import ModelFormat, ModelSpec, load_manifest
from shared.worker.engine import read_ahead
from shared.worker.protocol import ModelOutcome
from tests.support import fork_servers, predict, submission

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path: Path):
    def run(
        round_: SyntheticRound, models: list[tuple[ModelSpec, Path]], batch_rows: int = 64
    ) -> dict[str, ModelOutcome]:
        return predict(round_, models, tmp_path / f"run-{time.monotonic_ns()}", batch_rows)

    return run


def manifest_models(directory: Path) -> list[tuple[ModelSpec, Path]]:
    return [(s, directory / s.file) for s in load_manifest(directory / "models.json").models]


def raw_truth(round_: SyntheticRound, spec: ModelSpec, path: Path) -> np.ndarray:
    """Predictions made directly with each framework on the whole round, no engine involved."""
    frame = pd.read_parquet(round_.live_path)
    if spec.format.value == "numerai_pickle":
        with path.open("rb") as handle:
            return cloudpickle.load(handle)(frame)["prediction"].to_numpy()
    columns = round_.feature_sets[spec.features]
    x = frame[columns].to_numpy(np.float32)
    if spec.format.value == "keras":
        import keras

        return keras.saving.load_model(path, compile=False).predict(x, verbose=0).ravel()
    if spec.format.value == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_file=str(path)).predict(x)
    if spec.format.value == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0].ravel()
    if spec.format.value == "xgboost":
        import xgboost

        return xgboost.Booster(model_file=str(path)).predict(
            xgboost.DMatrix(x, feature_names=columns)
        )
    if spec.format.value == "catboost":
        import catboost

        return catboost.CatBoost().load_model(str(path)).predict(x)
    import joblib

    return np.ravel(joblib.load(path).predict(pd.DataFrame(x, columns=columns)))


def test_every_format_matches_its_framework_run_directly(
    small_round: SyntheticRound, all_formats: Path, run
) -> None:
    models = manifest_models(all_formats)
    assert {spec.format.value for spec, _ in models} == {f.value for f in ModelFormat}
    outcomes = run(small_round, models, batch_rows=64)
    for spec, path in models:
        outcome = outcomes[spec.name]
        assert outcome.ok, outcome.error
        assert outcome.rows == len(small_round.ids)
        frame = submission(outcome)
        assert list(frame.columns) == ["id", "prediction"]
        assert frame["id"].tolist() == small_round.ids
        expected = raw_truth(small_round, spec, path)
        if spec.output.value == "rank":
            expected = pd.Series(expected).rank(pct=True).to_numpy()
        np.testing.assert_allclose(frame["prediction"].to_numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("batch_rows", [1, 50, 503, 4096])
def test_predictions_do_not_depend_on_the_batch_size(
    small_round: SyntheticRound, all_formats: Path, batch_rows: int, run
) -> None:
    # Keras only at the extremes: each of its workers imports TensorFlow.
    formats = (
        ("keras", "lightgbm", "onnx", "xgboost")
        if batch_rows in (1, 4096)
        else ("lightgbm", "onnx", "xgboost")
    )
    models = [m for m in manifest_models(all_formats) if m[0].format.value in formats]
    reference = run(small_round, models, batch_rows=100)
    outcomes = run(small_round, models, batch_rows=batch_rows)
    for name, outcome in outcomes.items():
        assert outcome.ok, outcome.error
        pd.testing.assert_frame_equal(submission(outcome), submission(reference[name]), atol=1e-6)


def test_a_single_row_round_is_predicted(tmp_path: Path, example_models: Path, run) -> None:
    one = write_round(tmp_path / "one", rows=1, n_features=60, seed=9)
    outcomes = run(
        one,
        [m for m in manifest_models(example_models) if m[0].format.value != "numerai_pickle"],
        batch_rows=10,
    )
    for outcome in outcomes.values():
        assert outcome.ok, outcome.error
        assert submission(outcome)["id"].tolist() == one.ids
        assert submission(outcome)["prediction"].tolist() == [1.0]  # the rank of a lone row


def test_missing_values_are_filled_with_the_middle_bin_unless_the_manifest_says_otherwise(
    tmp_path: Path, run
) -> None:
    holes = write_round(tmp_path / "holes", rows=200, n_features=20, missing_fraction=0.2, seed=4)
    features = holes.feature_sets["all"]
    weights = np.linspace(-1, 1, len(features))
    write_onnx_linear(tmp_path / "lin.onnx", weights, 0.0)
    filled = ModelSpec(name="filled", file="lin.onnx", format="onnx", features="all", output="raw")
    other_fill = filled.model_copy(update={"name": "zeros", "fill_missing": 0.0})
    nan_aware = filled.model_copy(update={"name": "nan_aware", "fill_missing": None})
    outcomes = run(
        holes, [(s, tmp_path / "lin.onnx") for s in (filled, other_fill, nan_aware)], batch_rows=33
    )

    frame = pd.read_parquet(holes.live_path)[features]
    for name, fill in (("filled", 2.0), ("zeros", 0.0)):
        expected = frame.fillna(fill).to_numpy(np.float32) @ weights.astype(np.float32)
        raw = submission(outcomes[name])["prediction"].to_numpy()
        np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-4)
    # Raw outputs of this linear model are not all inside [0, 1]: Numerai's rules say so.
    assert "predictions lie outside [0, 1]" in outcomes["filled"].error
    assert "predicted NaN or infinity" in outcomes["nan_aware"].error
    # Rejected predictions are kept, NaN and all, for the archive.
    assert submission(outcomes["nan_aware"])["prediction"].isna().any()


def test_a_missing_feature_fails_that_model_only(
    small_round: SyntheticRound, example_models: Path, run
) -> None:
    models = manifest_models(example_models)
    wanted = ["feature_0001", "feature_gone_a", "feature_gone_b"]
    write_onnx_linear(example_models.parent / "three.onnx", np.ones(3), 0.0)
    broken = ModelSpec(name="needs_more", file="three.onnx", format="onnx", features=wanted)
    outcomes = run(small_round, [*models, (broken, example_models.parent / "three.onnx")])
    assert outcomes["needs_more"].error == (
        "model 'needs_more': 2 of its 3 features are not in live.parquet of data version v5.3: "
        "feature_gone_a, feature_gone_b"
    )
    assert all(outcomes[s.name].ok for s, _ in models)


def test_values_outside_the_bins_fail_the_models_that_take_them(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path, run
) -> None:
    shutil.copytree(small_round.directory, tmp_path / "bad")
    bad = SyntheticRound(tmp_path / "bad", small_round.feature_sets, small_round.ids)
    column = next(
        c for c in small_round.feature_sets["all"] if c not in small_round.feature_sets["medium"]
    )
    frame = pd.read_parquet(small_round.live_path)
    frame[column] = np.int8(127)
    frame.to_parquet(bad.live_path)
    outcomes = run(bad, manifest_models(example_models))
    assert outcomes["demo_catboost"].error == (
        "model 'demo_catboost': 1 of its 60 features has values outside 0–4 in live.parquet of data "
        f"version v5.3: {column} (127)"
    )
    assert outcomes["demo_catboost"].csv is None  # nothing predicted from bad data
    assert outcomes["demo_lightgbm"].ok and outcomes["demo_onnx"].ok  # they do not take that column
    # An upload pickle gets live.parquet as it is, as on Numerai: its output is judged, not the file.
    assert outcomes["demo_upload"].ok, outcomes["demo_upload"].error


def test_a_warning_of_the_model_reaches_its_outcome(
    small_round: SyntheticRound, tmp_path: Path, run
) -> None:
    write_onnx_stump(tmp_path / "stump.onnx", feature=0)
    stump = ModelSpec(name="stump", file="stump.onnx", format="onnx", features="medium")
    outcome = run(small_round, [(stump, tmp_path / "stump.onnx")])["stump"]
    assert outcome.ok, outcome.error
    assert outcome.warnings == [
        (
            "model 'stump': the ONNX model's input width is dynamic and its graph does not say how many "
            "features it takes; the manifest's 17 features were fed unchecked"
        )
    ]


def test_nan_and_constant_outputs_are_reported(
    small_round: SyntheticRound, tmp_path: Path, run
) -> None:
    small = small_round.feature_sets["small"]
    write_onnx_linear(tmp_path / "nan.onnx", np.full(len(small), np.nan), 0.0)
    write_onnx_linear(tmp_path / "constant.onnx", np.zeros(len(small)), 0.5)
    specs = [
        (
            ModelSpec(name="nan_model", file="nan.onnx", format="onnx", features="small"),
            tmp_path / "nan.onnx",
        ),
        (
            ModelSpec(name="flat", file="constant.onnx", format="onnx", features="small"),
            tmp_path / "constant.onnx",
        ),
    ]
    outcomes = run(small_round, specs)
    assert (
        outcomes["nan_model"].error
        == "model 'nan_model': predicted NaN or infinity for 503 of 503 rows"
    )
    assert not outcomes["flat"].ok
    assert "predictions are (nearly) equal" in outcomes["flat"].error
    assert outcomes["flat"].csv is not None


def test_a_broken_model_fails_alone(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path, run
) -> None:
    models = manifest_models(example_models)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    wrong_format = tmp_path / "gbm_as_onnx.onnx"
    shutil.copy(example_models / "demo_lightgbm.txt", wrong_format)
    extra = [
        (ModelSpec(name="corrupt", file="corrupt.keras", format="keras", features="all"), corrupt),
        (
            ModelSpec(
                name="mislabelled", file="gbm_as_onnx.onnx", format="onnx", features="medium"
            ),
            wrong_format,
        ),
    ]
    outcomes = run(small_round, [extra[0], *models, extra[1]])
    assert outcomes["corrupt"].error.startswith(
        "model 'corrupt': cannot load 'corrupt.keras' as keras:"
    )
    assert outcomes["mislabelled"].error == (
        "model 'mislabelled': 'gbm_as_onnx.onnx' is declared \"onnx\" but looks like a LightGBM text model; "
        'set "format": "lightgbm"'
    )
    assert all(outcomes[s.name].ok for s, _ in models)


def test_a_model_that_fails_mid_round_fails_alone(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path, run
) -> None:
    def predict(live_features, live_benchmark_models=None):
        raise MemoryError("pretend the model ran out of memory")

    path = tmp_path / "boom.pkl"
    path.write_bytes(cloudpickle.dumps(predict))
    boom = ModelSpec(name="boom", file="boom.pkl", format="numerai_pickle", trust_pickle=True)
    outcomes = run(small_round, [*manifest_models(example_models), (boom, path)])
    assert (
        outcomes["boom"].error == "model 'boom': MemoryError: pretend the model ran out of memory"
    )
    assert sum(o.ok for o in outcomes.values()) == 4


def test_width_mismatch_names_the_manifest_field(
    small_round: SyntheticRound, example_models: Path, run
) -> None:
    wrong = ModelSpec(name="wrong", file="demo_onnx.onnx", format="onnx", features="medium")
    outcome = run(small_round, [(wrong, example_models / "demo_onnx.onnx")])["wrong"]
    small, medium = (len(small_round.feature_sets[s]) for s in ("small", "medium"))
    assert (
        f"takes {small} features but its manifest entry gives {medium}; check 'features'"
        in outcome.error
    )


def test_lightgbm_feature_names_must_match_the_manifest_order(
    small_round: SyntheticRound, example_models: Path, run
) -> None:
    reordered = list(reversed(small_round.feature_sets["medium"]))
    spec = ModelSpec(
        name="shuffled", file="demo_lightgbm.txt", format="lightgbm", features=reordered
    )
    outcome = run(small_round, [(spec, example_models / "demo_lightgbm.txt")])["shuffled"]
    assert (
        f"was trained with '{small_round.feature_sets['medium'][0]}' as feature #1, but its manifest entry gives '{reordered[0]}'"
        in outcome.error
    )


def test_lightgbm_json_dumps_are_refused_with_the_fix(
    small_round: SyntheticRound, tmp_path: Path, run
) -> None:
    dump = tmp_path / "gbm.json"
    dump.write_text(json.dumps({"name": "tree", "version": "v4", "tree_info": []}))
    spec = ModelSpec(name="gbm", file="gbm.json", format="lightgbm", features="small")
    outcome = run(small_round, [(spec, dump)])["gbm"]
    assert "LightGBM cannot load" in outcome.error and "save_model" in outcome.error


def test_read_ahead_yields_everything_in_order_and_passes_errors_on() -> None:
    assert list(read_ahead(iter(range(100)))) == list(range(100))

    def failing():
        yield 1
        raise ValueError("disk went away")

    seen: list[int] = []
    with pytest.raises(ValueError, match="disk went away"):
        seen.extend(read_ahead(failing()))
    assert seen == [1]


def test_a_legacy_h5_keras_model_loads_and_predicts(
    small_round: SyntheticRound, tmp_path: Path, run
) -> None:
    from devkit.example_models import write_keras

    write_keras(tmp_path / "legacy.h5", small_round.feature_sets["medium"], hidden=(8,), seed=3)
    spec = ModelSpec(name="legacy", file="legacy.h5", format="keras", features="medium")
    outcome = run(small_round, [(spec, tmp_path / "legacy.h5")])["legacy"]
    assert outcome.ok, outcome.error
    expected = (
        pd.Series(raw_truth(small_round, spec, tmp_path / "legacy.h5")).rank(pct=True).to_numpy()
    )
    np.testing.assert_allclose(submission(outcome)["prediction"].to_numpy(), expected, atol=1e-6)


def test_max_parallel_models_runs_workers_side_by_side(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    # Each waits until both have started: only two workers at once can finish.
    def rendezvous(name: str, other: str):
        def predict_fn(live):
            import time
            from pathlib import Path

            Path(tmp_path / name).touch()
            deadline = time.monotonic() + 20
            while not Path(tmp_path / other).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{other} never started")
                time.sleep(0.05)
            return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

        return predict_fn

    models = []
    for name, other in (("left", "right"), ("right", "left")):
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(cloudpickle.dumps(rendezvous(name, other)))
        models.append(
            (ModelSpec(name=name, file=path.name, format="numerai_pickle", trust_pickle=True), path)
        )
    outcomes = predict(small_round, models, tmp_path / "work", max_parallel=2)
    assert outcomes["left"].ok and outcomes["right"].ok, (
        outcomes["left"].error,
        outcomes["right"].error,
    )


def test_a_worker_killed_from_outside_is_reported_as_likely_out_of_memory(
    small_round: SyntheticRound, tmp_path: Path
) -> None:
    def killed(live):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does

    path = tmp_path / "killed.pkl"
    path.write_bytes(cloudpickle.dumps(killed))
    spec = ModelSpec(name="killed", file="killed.pkl", format="numerai_pickle", trust_pickle=True)
    error = predict(small_round, [(spec, path)], tmp_path / "work")["killed"].error
    assert error.startswith(
        "model 'killed': the worker was killed (SIGKILL) while predicting, most likely by the "
        "system for lack of memory; this instance has "
    )


def test_a_fork_server_killed_mid_run_fails_its_worker_alone(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    # A model cannot kill its server (outside its PID namespace, see shared/worker/isolation.py):
    # the kernel's OOM killer can. This test plays it, once the victim's worker is running.
    running = tmp_path / "running"
    killed: list[psutil.Process] = []

    def victim(live):
        import time
        from pathlib import Path

        print("about to be killed", flush=True)
        for _ in range(200):  # until the server has drained it into the log (the worker's folder)
            if "about to be killed" in Path("worker.log").read_text():
                break
            time.sleep(0.05)
        Path(running).touch()
        time.sleep(120)  # orphaned when its server dies: it must end too

    def oom_killer() -> None:
        while not running.exists():
            time.sleep(0.05)
        [server] = fork_servers()
        killed.extend([server, *server.children()])
        server.kill()

    path = tmp_path / "victim.pkl"
    path.write_bytes(cloudpickle.dumps(victim))
    models = [
        (
            ModelSpec(name="victim", file="victim.pkl", format="numerai_pickle", trust_pickle=True),
            path,
        ),
        *[(s, p) for s, p in manifest_models(example_models) if s.name == "demo_onnx"],
    ]
    killer = threading.Thread(target=oom_killer)
    killer.start()
    outcomes = predict(small_round, models, tmp_path / "work")
    killer.join()
    assert outcomes["victim"].error.startswith("model 'victim': the worker server stopped")
    # What the server wrote to the log before it died is still shown.
    assert outcomes["victim"].output == ["about to be killed"]
    assert outcomes["demo_onnx"].ok, outcomes["demo_onnx"].error  # a new server ran it
    # The orphaned worker was killed, not left to sleep: checked on the processes themselves
    # rather than on the run's wall time, which a loaded machine stretches (SIGKILL acts at
    # once; 30 s only bounds that).
    assert not psutil.wait_procs(killed, timeout=30)[1]  # none still alive


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Every core kept busy by spinning processes, as on a loaded instance or shared CI machine."""
    spin = [sys.executable, "-c", "while True: pass"]
    spinners = [subprocess.Popen(spin) for _ in range(2 * (os.cpu_count() or 1))]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def reporting_its_rss(report: Path):
    """A model that predicts at once and writes its worker's resident memory (KiB) to `report`."""

    def predict_fn(live):
        from pathlib import Path

        status = Path("/proc/self/status").read_text().splitlines()
        rss = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
        Path(report).write_text(rss)
        return live[["feature_0000"]].rank(pct=True).set_axis(["prediction"], axis=1)

    return predict_fn


@pytest.mark.usefixtures("busy_machine")
def test_a_worker_that_ends_between_samples_reports_its_real_peak_memory(tmp_path: Path) -> None:
    # Each of these workers lives for a few tens of milliseconds, less than the supervisor's
    # sampling interval; sampling alone reported 0 MiB for some of them (issue #24).
    tiny = write_round(tmp_path / "tiny", rows=20, n_features=5, seed=3)
    models = []
    for index in range(6):
        path = tmp_path / f"quick_{index}.pkl"
        path.write_bytes(cloudpickle.dumps(reporting_its_rss(tmp_path / f"quick_{index}.rss")))
        models.append(
            (
                ModelSpec(
                    name=f"quick_{index}",
                    file=path.name,
                    format="numerai_pickle",
                    trust_pickle=True,
                ),
                path,
            )
        )
    outcomes = predict(tiny, models, tmp_path / "work")
    for name, outcome in outcomes.items():
        assert outcome.ok, outcome.error
        seen_by_the_model = int((tmp_path / f"{name}.rss").read_text()) / 1024
        assert outcome.peak_memory_mb >= seen_by_the_model > 50, (name, outcome, seen_by_the_model)
