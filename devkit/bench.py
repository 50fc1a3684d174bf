"""`make bench`: the product's worker processes against the libraries called directly, on a live-sized round.

Every figure comes from one run and is printed as a ratio against its target.
The round is 6,720 rows × 2,748 int8 features, as Numerai's live data.

Memory is the whole run's: the run's process, the fork server and the model
workers, summed as proportional set size (PSS) every 100 ms, so libraries the
workers share with the fork server count once. The run's own process is also
shown alone (its peak RSS), since it must stay free of any framework.

Scenarios:
- fleet: eight deep LightGBM models (3,000 trees of up to 255 leaves on all
  features; one trained file copied eight times, since only size and shape
  matter here), two Keras MLPs, an ONNX model and an upload pickle, through
  `python -m shared predict`, the path a run takes;
- alone: each distinct model of the fleet by itself, the same way;
- direct: in one process with every library imported beforehand, each model
  loaded and predicted on the whole round by its library (the sum of those
  times is what isolation is measured against; the round is read beforehand);
- deep ×1, ×2, ×4, ×8: peak memory against the number of deep models;
- naive: as the article does it, pandas.read_parquet of the whole file for each
  model, in one process (the old way, for the engine's time and memory);
- cold start: `import function_app` in fresh interpreters, as the Functions
  host does at every cold start to index the triggers;
- warm worker: one deep model through `run_workers` on a warm fork server (the
  pool's, started and used once beforehand), against the same model loaded and
  predicted by LightGBM in one process, alternately;
- upload pickle: the upload pickle through `python -m shared predict`, against
  Numerai's own hosted-runner path on the same pickle and round (NUMERAI_PREDICT:
  read the pickle with pandas, read the live parquet, call, check, write the
  CSV; the round is local where the runner downloads it), each a fresh process;
- queue mode: the eight deep models through the real job, one instance (local)
  against two (queue), in devkit/bench_scaleout.py;
- package: each deployment profile's zip size (`make package`, every format and
  SLIM_FORMATS), and, from its unzipped, read-only package in an interpreter
  that sees only it (`python -I -S -B`, as Flex runs it), `import function_app`
  and the first model's imports with the package's bytecode and without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil

from devkit.bench_scaleout import scaleout
from devkit.example_models import write_keras, write_numerai_pickle, write_onnx
from devkit.local_stack import LocalStack
from devkit.package import ALL_FORMATS, SITE_PACKAGES, Package, build, profile_name
from devkit.synthetic import LIVE_ROWS, NUMERAI_ALL, SyntheticRound, training_rows, write_round
from shared.worker.supervisor import process_tree

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work" / "bench"
DEEP_COPIES = 8
DEEP_TREES = 3000
# Often enough for peaks that last as long as a model loads; rarely enough to cost little CPU.
SAMPLE_SECONDS = 0.1
# The host imports function_app at every cold start; Flex allows 30 s for it, package download included.
IMPORT_TARGET_SECONDS = 0.3
IMPORT_BEFORE_SECONDS = 2.1  # median of 5, measured here before the change
# Flex downloads the package at every cold start; MB are 10^6 bytes.
PACKAGE_TARGET_MB = 450
# The profile without TensorFlow and CatBoost (PACKAGE_FORMATS), and its target.
SLIM_FORMATS = ("lightgbm", "onnx", "numerai_pickle", "sklearn", "xgboost")
SLIM_TARGET_MB = 250
# What a model's worker imports first, per profile: Keras' (pandas, TensorFlow) where the
# package has it, else LightGBM's.
FIRST_MODEL_IMPORTS = {
    "keras": "pandas, pyarrow.parquet, keras",
    "lightgbm": "pandas, pyarrow.parquet, lightgbm",
}
# Imports from the unzipped package, in an interpreter that sees only it and writes no bytecode.
PACKAGE_IMPORT = """
import sys, time
root = sys.argv[1]
sys.path[:0] = [root, root + "/.python_packages/lib/site-packages"]
started = time.perf_counter()
exec("import " + sys.argv[2])
print(time.perf_counter() - started)
"""
# Timed runs per side of the warm-worker and upload-pickle scenarios (medians, after one untimed).
REPEATS = 5
WARM_TARGET = 1.15
UPLOAD_TARGET = 1.2
# Numerai's hosted runner (numerai/numerai-predict, predict.py) as it treats a pickle, with the
# downloads replaced by local files: pandas.read_pickle, the live parquet (and the benchmark
# models for a two-parameter function), one call, its checks, the CSV with the index. It
# imports numerapi at the top, as predict.py does to download the round.
NUMERAI_PREDICT = """
import inspect, os, secrets, sys
import numerapi
import pandas as pd
model_path, live_path, benchmarks_path, out_dir = sys.argv[1:5]
model = pd.read_pickle(model_path)
parameters = len(inspect.signature(model).parameters)
live = pd.read_parquet(live_path)
if parameters == 1:
    predictions = model(live)
else:
    predictions = model(live, pd.read_parquet(benchmarks_path))
assert type(predictions) is pd.DataFrame and len(predictions) == len(live)
assert not predictions.isna().any().any() and predictions.iloc[:, 0].between(0, 1).all()
with open(os.path.join(out_dir, f"live_predictions-{secrets.token_hex(6)}.csv"), "w") as handle:
    predictions.to_csv(handle)
"""
# A fresh interpreter, as a cold Functions host starts one: import the app, answer one
# POST /api/test-run, print the split as one JSON line.
COLD_TEST_RUN = """
import json, time
started = time.perf_counter()
import function_app
import azure.functions as func
imported = time.perf_counter()
request = func.HttpRequest("POST", "/api/test-run", body=b"{}")
response = function_app.test_run.build().get_user_function()(request)
print(json.dumps({"status": response.status_code, "import": imported - started,
                  "run": time.perf_counter() - imported, "body": response.get_body().decode()[-2000:]}))
"""


def prepare(work: Path) -> dict[str, list[dict]]:
    """Generate the round and the models once (the deep model takes minutes to train); the manifests."""
    models = work / "models"
    live = work / "live"
    if not (work / "ready").exists():
        models.mkdir(parents=True, exist_ok=True)
        sets = write_round(live, LIVE_ROWS, NUMERAI_ALL, seed=1).feature_sets
        if not (models / "deep.txt").exists():
            _train_deep(models / "deep.txt", sets["all"])
        write_keras(models / "mlp_a.keras", sets["all"], hidden=(256, 64), seed=1)
        write_keras(models / "mlp_b.keras", sets["all"], hidden=(128, 32), seed=2)
        write_onnx(models / "ridge.onnx", sets["small"], seed=4)
        write_numerai_pickle(models / "upload.pkl", sets["medium"], seed=5)
        (work / "ready").write_text("")
    for copy in range(DEEP_COPIES):
        target = models / f"deep_{copy}.txt"
        if not target.exists():
            shutil.copy(models / "deep.txt", target)
    deep = [
        {"name": f"deep_{i}", "file": f"deep_{i}.txt", "format": "lightgbm", "features": "all"}
        for i in range(DEEP_COPIES)
    ]
    others = [
        {"name": "mlp_a", "file": "mlp_a.keras", "format": "keras", "features": "all"},
        {"name": "mlp_b", "file": "mlp_b.keras", "format": "keras", "features": "all"},
        {"name": "ridge", "file": "ridge.onnx", "format": "onnx", "features": "small"},
        {"name": "upload", "file": "upload.pkl", "format": "numerai_pickle", "trust_pickle": True},
    ]
    return {"fleet": deep + others, "deep": deep, "others": others}


def _train_deep(path: Path, features: list[str]) -> None:
    import lightgbm

    log.info(
        "training a %d-tree LightGBM model on %d features (once; minutes) ...",
        DEEP_TREES,
        len(features),
    )
    x, y = training_rows(features, 5000, 3)
    params = {
        "objective": "regression",
        "num_leaves": 255,
        "learning_rate": 0.01,
        "min_data_in_leaf": 5,
        "feature_fraction": 0.1,
        "max_bin": 5,
        "verbose": -1,
        "seed": 3,
        "num_threads": 2,
    }
    lightgbm.train(params, lightgbm.Dataset(x, y, feature_name=features), DEEP_TREES).save_model(
        str(path)
    )


def run_product(work: Path, name: str, entries: list[dict]) -> dict:
    """`python -m shared predict` on `entries`, sampled: wall seconds, whole-run peak PSS, run-process RSS."""
    manifest = work / "models" / f"bench-{name}.json"
    manifest.write_text(json.dumps({"models": entries}))
    out = work / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "shared",
        "predict",
        "--data",
        str(work / "live"),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak, own = _sample_peak_pss(process)
    stderr = process.communicate()[1]
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "seconds": seconds,
        "peak_mb": peak,
        "run_process_mb": own,
        "models": {m["name"]: m for m in summary["models"]},
    }


def _sample_peak_pss(process: subprocess.Popen) -> tuple[float, float]:
    """While `process` runs: the largest sum of PSS over it and its descendants, and its own peak RSS (MiB)."""
    peak = own = 0.0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            own = max(own, root.memory_info().rss / 2**20)
        except psutil.Error:
            break
        peak = max(peak, sum(_pss_mb(member) for member in process_tree(process.pid)))
        time.sleep(SAMPLE_SECONDS)
    return peak, own


def _pss_mb(pid: int) -> float:
    """A process's proportional set size from the kernel's one-line rollup (cheap to read)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass  # exited between the listing and the reading
    return 0.0


def direct(work: Path, entries: list[dict]) -> dict[str, float]:
    """Load and predict each model with its library in this process; seconds per model (imports and reading excluded)."""
    import keras
    import lightgbm
    import onnxruntime
    import pandas as pd

    sets = json.loads((work / "live" / "features.json").read_text())["feature_sets"]
    live = pd.read_parquet(work / "live" / "live.parquet")
    arrays = {name: live[columns].to_numpy(np.float32) for name, columns in sets.items()}
    benchmarks = pd.read_parquet(work / "live" / "live_benchmark_models.parquet")
    seconds = {}
    for entry in entries:
        path = work / "models" / entry["file"]
        started = time.perf_counter()
        if entry["format"] == "lightgbm":
            lightgbm.Booster(model_file=str(path)).predict(arrays[entry["features"]])
        elif entry["format"] == "keras":
            model = keras.saving.load_model(path, compile=False)
            model.predict(arrays[entry["features"]], batch_size=2000, verbose=0)
        elif entry["format"] == "onnx":
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            session.run(None, {session.get_inputs()[0].name: arrays[entry["features"]]})
        else:
            pd.read_pickle(path)(live, benchmarks)
        seconds[entry["name"]] = time.perf_counter() - started
    return seconds


def deep_alternating(work: Path, entries: list[dict]) -> dict[str, list[float]]:
    """The entry's LightGBM model, REPEATS times each way, alternated; seconds per run and way.

    "direct": loaded and predicted by LightGBM in this process, on the round read beforehand
    (as `direct` does). "warm": through `run_workers` on the pool's warm fork server, what a
    run or a queue task pays once the server is up. One untimed run of each first starts the
    server (its imports are what the pool saves) and warms the caches; alternating lets both
    ways see the same machine, whose load other processes change from minute to minute.
    """
    import lightgbm
    import pandas as pd

    from shared.limits import WorkerLimits
    from shared.manifest import ModelSpec
    from shared.worker.protocol import WorkRequest
    from shared.worker.supervisor import run_workers

    [entry] = entries
    live, model_file = work / "live", work / "models" / entry["file"]
    sets = json.loads((live / "features.json").read_text())["feature_sets"]
    x = pd.read_parquet(live / "live.parquet")[sets[entry["features"]]].to_numpy(np.float32)
    spec = ModelSpec.model_validate(entry)
    limits = WorkerLimits(seconds=3600, memory_mb=8192)

    def direct_once() -> None:
        lightgbm.Booster(model_file=str(model_file)).predict(x)

    def warm_once(run: int) -> None:
        request = WorkRequest(
            spec,
            model_file,
            live / "live.parquet",
            live / "features.json",
            None,
            "v5.3",
            2000,
            work / "out" / "warm" / str(run),
        )
        [outcome] = run_workers([request], limits)
        if not outcome.ok:
            raise SystemExit(f"the warm worker failed: {outcome.error}")

    seconds: dict[str, list[float]] = {"direct": [], "warm": []}
    for run in range(REPEATS + 1):
        started = time.perf_counter()
        direct_once()
        seconds["direct"].append(time.perf_counter() - started)
        started = time.perf_counter()
        warm_once(run)
        seconds["warm"].append(time.perf_counter() - started)
    return {way: values[1:] for way, values in seconds.items()}


def warm_worker(deep: dict) -> list[str]:
    """Scenario: one deep model in a warm worker against LightGBM called directly; lines."""
    seconds = _in_child("deep_alternating", [deep])
    direct_seconds, warm_seconds = seconds["direct"], seconds["warm"]
    ratio = _median(warm_seconds) / _median(direct_seconds)
    return [
        (
            f"one deep model, median of {REPEATS}: direct {_listed(direct_seconds)}, "
            f"warm worker {_listed(warm_seconds)}"
        ),
        _ratio("warm worker / direct (one deep model)", ratio, "<=", WARM_TARGET),
    ]


def upload_pickle(work: Path, entry: dict) -> list[str]:
    """Scenario: the upload pickle through `python -m shared predict` and Numerai's path; lines.

    Fresh processes, alternated (one untimed each first), so that both see the same machine.
    """
    live, out = work / "live", work / "out" / "upload"
    manifest = work / "models" / "bench-upload.json"
    manifest.write_text(json.dumps({"models": [entry]}))
    out.mkdir(parents=True, exist_ok=True)
    commands = {
        "ours": [
            sys.executable,
            "-m",
            "shared",
            "predict",
            "--data",
            str(live),
            "--manifest",
            str(manifest),
            "--out",
            str(out / "ours"),
        ],
        "numerai": [
            sys.executable,
            "-c",
            NUMERAI_PREDICT,
            str(work / "models" / entry["file"]),
            str(live / "live.parquet"),
            str(live / "live_benchmark_models.parquet"),
            str(out),
        ],
    }
    timed: dict[str, list[float]] = {"ours": [], "numerai": []}
    for _ in range(REPEATS + 1):
        for name, command in commands.items():
            timed[name].append(_timed_process(command))
    ours, numerai = timed["ours"][1:], timed["numerai"][1:]
    return [
        (
            f"upload pickle, fresh processes, median of {REPEATS}: "
            f"python -m shared predict {_listed(ours)}, Numerai's path {_listed(numerai)}"
        ),
        _ratio(
            "shared predict / Numerai's path (upload)",
            _median(ours) / _median(numerai),
            "<=",
            UPLOAD_TARGET,
        ),
    ]


def _timed_process(command: list[str]) -> float:
    """Wall seconds of `command` from start to exit; SystemExit with its errors if it failed."""
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{completed.stderr[-3000:]}")
    return seconds


def _listed(seconds: list[float]) -> str:
    """'median s (each, …)' for printing."""
    return f"{_median(seconds):.2f} s ({', '.join(f'{value:.2f}' for value in seconds)})"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def report(results: dict) -> list[str]:
    """The measured figures and the target ratios, as printed lines."""
    fleet, alone, direct_seconds = results["fleet"], results["alone"], results["direct"]
    largest_name, largest = max(alone.items(), key=lambda item: item[1]["peak_mb"])
    direct_sum = sum(direct_seconds.values())
    lines = [
        f"{'run':<22} {'seconds':>8} {'peak MiB (all processes, PSS)':>31} {'run process RSS MiB':>20}",
        f"{'fleet (12 models)':<22} {fleet['seconds']:>8.1f} {fleet['peak_mb']:>31.0f} {fleet['run_process_mb']:>20.0f}",
        *(
            f"{'alone: ' + name:<22} {r['seconds']:>8.1f} {r['peak_mb']:>31.0f} {r['run_process_mb']:>20.0f}"
            for name, r in alone.items()
        ),
        *(
            f"{'deep x' + str(n):<22} {r['seconds']:>8.1f} {r['peak_mb']:>31.0f} {r['run_process_mb']:>20.0f}"
            for n, r in results["scaling"].items()
        ),
        "",
        "direct (library calls in one process, imports and reading excluded), seconds: "
        + ", ".join(f"{name} {value:.2f}" for name, value in direct_seconds.items()),
        f"sum of direct: {direct_sum:.1f} s; fleet in workers: {fleet['seconds']:.1f} s",
        "",
        _ratio(
            f"fleet peak / alone peak ({largest_name})",
            fleet["peak_mb"] / largest["peak_mb"],
            "<=",
            1.15,
        ),
        _ratio("run process RSS MiB", fleet["run_process_mb"], "<=", 300),
        _ratio("fleet time / direct sum", fleet["seconds"] / direct_sum, "<=", 1.25),
        _ratio(
            "deep x8 peak / deep x1 peak",
            results["scaling"][8]["peak_mb"] / results["scaling"][1]["peak_mb"],
            "<=",
            1.15,
        ),
        "",
        "Not a target: the article's way (pandas.read_parquet of the whole round per model, one process)",
        f"against the workers, for the fleet without Keras: {results['naive']['seconds']:.1f} s against "
        f"{results['fleet_light']['seconds']:.1f} s",
    ]
    return lines


def naive(work: Path, entries: list[dict]) -> float:
    """The article's way, for comparison: read the whole file again for every model; seconds."""
    import pandas as pd

    started = time.perf_counter()
    sets = json.loads((work / "live" / "features.json").read_text())["feature_sets"]
    for entry in entries:
        live = pd.read_parquet(work / "live" / "live.parquet")
        path = work / "models" / entry["file"]
        if entry["format"] == "lightgbm":
            import lightgbm

            lightgbm.Booster(model_file=str(path)).predict(live[sets[entry["features"]]])
        elif entry["format"] == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            session.run(
                None,
                {session.get_inputs()[0].name: live[sets[entry["features"]]].to_numpy(np.float32)},
            )
        else:
            pd.read_pickle(path)(live, None)
    return time.perf_counter() - started


def cold_start(runs: int = 5) -> list[str]:
    """`import function_app` in fresh interpreters, median of `runs`, and `import azure.functions` alone; printed lines."""
    app, floor = (
        _median_import_seconds("function_app", runs),
        _median_import_seconds("azure.functions", runs),
    )
    return [
        (
            f"import function_app, median of {runs} fresh interpreters: {app:.3f} s ({IMPORT_BEFORE_SECONDS} s before "
            f"the triggers imported shared.triggers lazily); of which azure.functions alone, which indexing needs: {floor:.3f} s"
        ),
        _ratio(
            f"import function_app / {IMPORT_TARGET_SECONDS} s", app / IMPORT_TARGET_SECONDS, "<=", 1
        ),
    ]


def _median_import_seconds(module: str, runs: int) -> float:
    """The median time to import `module` in `runs` fresh interpreters, after one untimed to warm the page cache."""
    code = f"import time; started = time.perf_counter(); import {module}; print(time.perf_counter() - started)"
    seconds = []
    for _ in range(runs + 1):
        completed = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
        )
        seconds.append(float(completed.stdout.strip().splitlines()[-1]))
    return sorted(seconds[1:])[runs // 2]


def package_profiles(work: Path) -> list[str]:
    """Each profile's zip against its target, and its imports with and without bytecode.

    The default profile is built last, so `.work/package/app` is left as azd deploys it.
    """
    lines = []
    for formats, target in ((SLIM_FORMATS, SLIM_TARGET_MB), (ALL_FORMATS, PACKAGE_TARGET_MB)):
        log.info("package, %s ...", profile_name(formats))
        package = build(formats)
        megabytes = package.zip_bytes / 1e6
        lines += [
            package.summary(),
            _ratio(f"zip ({profile_name(formats)}) / {target} MB", megabytes / target, "<=", 1.0),
        ]
        if megabytes > target:
            lines.append(f"{megabytes - target:,.0f} MB over; the biggest pieces, zipped MB:")
            lines += [
                f"  {name:<32} {size / 1e6:7.1f}"
                for name, size in _biggest_pieces(package.zip_path)
            ]
        lines += _package_imports(package, work / "package-run")
    return lines


def _package_imports(package: Package, root: Path, runs: int = 3) -> list[str]:
    """`import function_app` and the first model's imports from the unzipped package, with
    its bytecode and with its __pycache__ folders removed; medians of `runs` after one untimed."""
    first = "keras" if "keras" in package.formats else "lightgbm"
    imports = {"function_app": "function_app", f"first model ({first})": FIRST_MODEL_IMPORTS[first]}
    _remove_tree(root)
    with zipfile.ZipFile(package.zip_path) as archive:
        archive.extractall(root)
    seconds: dict[str, list[float]] = {}
    try:
        for _ in ("with bytecode", "without"):
            _set_writable(root, False)  # as Flex mounts it
            for label, modules in imports.items():
                seconds.setdefault(label, []).append(_package_import_seconds(root, modules, runs))
            _set_writable(root, True)
            for cache in list(root.rglob("__pycache__")):
                shutil.rmtree(cache)
    finally:
        _remove_tree(root)
    return [
        f"  import {label} from the read-only package, median of {runs}: "
        f"{with_:.2f} s with its bytecode, {without:.2f} s without ({without / with_:.1f}x)"
        for label, (with_, without) in seconds.items()
    ]


def _package_import_seconds(root: Path, modules: str, runs: int) -> float:
    seconds = []
    for _ in range(runs + 1):
        completed = subprocess.run(
            [sys._base_executable, "-I", "-S", "-B", "-c", PACKAGE_IMPORT, str(root), modules],
            cwd=root.parent,
            env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(
                f"import {modules} from the package failed:\n{completed.stderr[-3000:]}"
            )
        seconds.append(float(completed.stdout.strip().splitlines()[-1]))
    return _median(seconds[1:])


def _set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


def _remove_tree(root: Path) -> None:
    if root.exists():
        _set_writable(root, True)
        shutil.rmtree(root)


def _biggest_pieces(zip_path: Path, count: int = 10) -> list[tuple[str, int]]:
    """Compressed bytes per installed package (top folder of site-packages) and for the largest files."""
    pieces: dict[str, int] = {}
    files = []
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            name = info.filename.removeprefix(f"{SITE_PACKAGES}/").split("/", 1)[0]
            pieces[name] = pieces.get(name, 0) + info.compress_size
            files.append(
                (f"file {info.filename.removeprefix(SITE_PACKAGES + '/')}", info.compress_size)
            )
    biggest = sorted(pieces.items(), key=lambda item: -item[1])[:count]
    return biggest + sorted(files, key=lambda item: -item[1])[:3]


def cold_test_run(work: Path) -> list[str]:
    """Seconds from a fresh interpreter to a finished HTTP test run of one ONNX model on the local stack.

    Azurite and the Numerai sandbox run as in `make demo`; the round is the live-sized
    one prepare() wrote, the model its ONNX ridge. The page cache is warm.
    """
    models = work / "models" / "cold"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "models" / "ridge.onnx", models / "ridge.onnx")
    (models / "models.json").write_text(
        json.dumps(
            {
                "models": [
                    {"name": "ridge", "file": "ridge.onnx", "format": "onnx", "features": "small"}
                ]
            }
        )
    )
    sets = json.loads((work / "live" / "features.json").read_text())["feature_sets"]
    logging.getLogger("azure").setLevel(
        logging.WARNING
    )  # the storage SDK logs every request at INFO
    with LocalStack() as stack:
        stack.deploy(models, SyntheticRound(work / "live", sets, ids=[]))
        environment = {
            **os.environ,
            **stack.environ(work / "cold-app"),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-c", COLD_TEST_RUN],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"the cold test run failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["status"] != 200:
        raise SystemExit(f"the cold test run answered HTTP {result['status']}: {result['body']}")
    return [
        (
            f"fresh interpreter to a finished HTTP test run (one ONNX model, live-sized round): {seconds:.1f} s "
            f"(import function_app {result['import']:.1f} s, the run {result['run']:.1f} s, "
            "the rest interpreter start and exit)"
        )
    ]


def _ratio(label: str, value: float, op: str, target: float) -> str:
    met = value <= target if op == "<=" else value >= target
    return f"{label:<42} {value:8.2f}  (target {op} {target:g}: {'met' if met else 'NOT met'})"


def _in_child(function: str, entries: list[dict]) -> object:
    """Run `function` of this module in a fresh process (its imports are its own); its JSON result."""
    completed = subprocess.run(
        [sys.executable, "-m", "devkit.bench", "--child", function, json.dumps(entries)],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{function} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _scenarios(manifests: dict[str, list[dict]], names: list[str]) -> list[str]:
    """The warm-worker, upload-pickle, queue-mode and package scenarios named in `names`; printed lines."""
    lines = []
    if "warm" in names:
        log.info("one deep model: warm worker against direct ...")
        lines += warm_worker(manifests["deep"][0])
    if "upload" in names:
        log.info("upload pickle: python -m shared predict against Numerai's path ...")
        upload = next(e for e in manifests["others"] if e["format"] == "numerai_pickle")
        lines += upload_pickle(WORK, upload)
    if "scaleout" in names:
        log.info("queue mode against local ...")
        lines += scaleout(WORK, manifests["deep"])
    if "package" in names:
        lines += package_profiles(WORK)
    return lines


CHILDREN = {"direct": direct, "naive": naive, "deep_alternating": deep_alternating}


def main(argv: list[str] | None = None) -> int:
    """Prepare the data, run every scenario and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m devkit.bench")
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument(
        "--only",
        choices=["warm", "upload", "scaleout", "package"],
        action="append",
        help="run only these scenarios (repeatable); without it, every scenario",
    )
    parser.add_argument("entries", nargs="?")
    args = parser.parse_args(argv)
    if args.child:
        # The parent reads this line.
        print(json.dumps(CHILDREN[args.child](WORK, json.loads(args.entries))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.only:
        # The package scenario builds its own; the others need the round and models.
        manifests = prepare(WORK) if set(args.only) - {"package"} else {}
        os.sync()
        print("\n".join(_scenarios(manifests, args.only)))
        return 0
    print("\n".join(cold_start()))  # seconds, where the rest takes minutes: first
    manifests = prepare(WORK)
    os.sync()  # let the kernel flush what prepare() wrote before any clock starts
    fleet, deep, others = manifests["fleet"], manifests["deep"], manifests["others"]
    results: dict = {"alone": {}, "scaling": {}}
    log.info("fleet ...")
    results["fleet"] = run_product(WORK, "fleet", fleet)
    for count in (1, 2, 4, 8):
        log.info("deep x%d ...", count)
        results["scaling"][count] = run_product(WORK, f"deep-{count}", deep[:count])
    results["alone"][deep[0]["name"]] = results["scaling"][1]
    for entry in others:
        log.info("alone: %s ...", entry["name"])
        results["alone"][entry["name"]] = run_product(WORK, f"alone-{entry['name']}", [entry])
    log.info("direct ...")
    results["direct"] = _in_child("direct", fleet)
    light = [entry for entry in fleet if entry["format"] != "keras"]
    log.info("naive and engine without Keras ...")
    results["naive"] = {"seconds": _in_child("naive", light)}
    results["fleet_light"] = run_product(WORK, "fleet-light", light)
    print("\n".join(report(results)))
    print("\n".join(["", *_scenarios(manifests, ["warm", "upload"])]))
    print("\n".join(["", *package_profiles(WORK)]))
    log.info("cold HTTP test run ...")
    print("\n".join(cold_test_run(WORK)))
    log.info("queue mode against local ...")
    print("\n".join(["", *scaleout(WORK, deep)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
