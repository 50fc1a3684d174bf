"""`make bench`: the engine against the naive way and against the limit, on a live-sized round.

Each scenario runs in a fresh Python process so that its peak RSS is its own.
Every scenario imports the same modules before its clock starts, so the seconds
compare reading, converting, loading and predicting, not import times. Memory
is shown twice: the process's peak RSS (what an Azure instance must hold;
TensorFlow's import alone takes about 780 MiB) and the job's growth (the peak
after resetting the high-water mark through /proc/self/clear_refs once the
imports are done, minus the RSS at that moment).

Scenarios, on a generated round of 6,720 rows × 2,748 int8 features and four
models (two Keras MLPs on `all`, LightGBM on `medium`, ONNX on `small`):
- engine: `shared.predictor.predict_round`, batched, one pass for all models;
- naive: as the article does it, `pandas.read_parquet` of the whole file for
  each model, then `model.predict` on the model's columns;
- limit: one parquet read, the model loads, and bare inference on float32
  arrays converted beforehand (the conversion is not timed);
- engine_20x: the engine on a round with 20 times the rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from devkit.example_models import write_keras, write_lightgbm, write_onnx
from devkit.synthetic import LIVE_ROWS, NUMERAI_ALL, write_round

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work" / "bench"
BATCH_ROWS = 2000
KERAS_CALL_BATCH = 2000


def prepare(work: Path) -> None:
    """Generate both rounds and the four models (reused when already there)."""
    if (work / "ready").exists():
        return
    live = write_round(work / "live", LIVE_ROWS, NUMERAI_ALL, seed=1)
    write_round(work / "live20x", LIVE_ROWS * 20, NUMERAI_ALL, seed=2)
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    sets = live.feature_sets
    write_keras(models / "mlp_a.keras", sets["all"], hidden=(256, 64), seed=1)
    write_keras(models / "mlp_b.keras", sets["all"], hidden=(128, 32), seed=2)
    write_lightgbm(models / "gbm.txt", sets["medium"], rounds=300, seed=3)
    write_onnx(models / "ridge.onnx", sets["small"], seed=4)
    manifest = {"models": [
        {"name": "mlp_a", "file": "mlp_a.keras", "format": "keras", "features": "all"},
        {"name": "mlp_b", "file": "mlp_b.keras", "format": "keras", "features": "all"},
        {"name": "gbm", "file": "gbm.txt", "format": "lightgbm", "features": "medium"},
        {"name": "ridge", "file": "ridge.onnx", "format": "onnx", "features": "small"},
    ]}
    (models / "models.json").write_text(json.dumps(manifest, indent=2))
    without_keras = {"models": [m for m in manifest["models"] if m["format"] != "keras"]}
    (models / "models-no-keras.json").write_text(json.dumps(without_keras, indent=2))
    (work / "ready").write_text("")


def _import_everything() -> None:
    import keras  # noqa: F401
    import lightgbm  # noqa: F401
    import onnxruntime  # noqa: F401
    import pandas  # noqa: F401

    import shared.predictor  # noqa: F401


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # Writing 5 resets the process's RSS high-water mark (Linux 4.0+).
    Path("/proc/self/clear_refs").write_text("5")


def scenario_engine(data: Path, manifest_path: Path) -> dict:
    """The product's engine, as `python -m shared predict` runs it."""
    from shared.live_data import LiveData, read_feature_sets
    from shared.manifest import load_manifest
    from shared.predictor import predict_round

    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    outcomes = predict_round(
        LiveData(data / "live.parquet", "bench"), read_feature_sets(data / "features.json"),
        [(spec, manifest_path.parent / spec.file) for spec in manifest.models], BATCH_ROWS,
    )
    seconds = time.perf_counter() - started
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"engine failed: {failed}")
    return {"seconds": seconds}


def scenario_naive(data: Path, manifest_path: Path) -> dict:
    """The article's way: read the whole file again for every model, predict, rank."""
    import pandas as pd

    import keras
    import lightgbm
    import onnxruntime

    started = time.perf_counter()
    sets = json.loads((data / "features.json").read_text())["feature_sets"]
    manifest = json.loads(manifest_path.read_text())["models"]
    for entry in manifest:
        live = pd.read_parquet(data / "live.parquet")
        features = live[sets[entry["features"]]]
        path = manifest_path.parent / entry["file"]
        if entry["format"] == "keras":
            raw = keras.saving.load_model(path).predict(features, verbose=0)
        elif entry["format"] == "lightgbm":
            raw = lightgbm.Booster(model_file=str(path)).predict(features)
        else:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            raw = session.run(None, {session.get_inputs()[0].name: features.values.astype(np.float32)})[0]
        live["prediction"] = np.ravel(raw)
        live["prediction"].rank(pct=True).to_frame("prediction").reset_index()
    return {"seconds": time.perf_counter() - started}


def scenario_limit(data: Path, manifest_path: Path) -> dict:
    """One parquet read, the model loads, bare inference on preloaded float32 arrays."""
    import pyarrow.parquet as pq

    from shared.manifest import load_manifest
    from shared.model_formats import load_model

    sets = json.loads((data / "features.json").read_text())["feature_sets"]
    manifest = load_manifest(manifest_path)
    started = time.perf_counter()
    table = pq.read_table(data / "live.parquet", columns=sets["all"])
    timed = time.perf_counter() - started
    arrays = {name: np.stack([table.column(c).to_numpy() for c in cols]).T.astype(np.float32, order="C")
              for name, cols in sets.items() if name in {m.features for m in manifest.models}}
    started = time.perf_counter()
    for spec in manifest.models:
        model = load_model(spec, manifest_path.parent / spec.file, sets[spec.features])
        x = arrays[spec.features]
        for start in range(0, len(x), BATCH_ROWS):
            model.predict_batch(x[start:start + BATCH_ROWS])
    return {"seconds": timed + time.perf_counter() - started}


def scenario_keras_calls(data: Path, manifest_path: Path) -> dict:
    """Seconds for one pass of the round through a Keras MLP by three calls."""
    import keras
    import pyarrow.parquet as pq

    sets = json.loads((data / "features.json").read_text())["feature_sets"]
    table = pq.read_table(data / "live.parquet", columns=sets["all"])
    x = np.stack([table.column(c).to_numpy() for c in sets["all"]]).T.astype(np.float32, order="C")
    from shared.manifest import ModelSpec
    from shared.model_formats import load_model

    path = manifest_path.parent / "mlp_a.keras"
    model = keras.saving.load_model(path)
    ours = load_model(ModelSpec(name="mlp_a", file=path.name, format="keras", features="all"), path, sets["all"])
    calls = {
        "predict": lambda b: model.predict(b, verbose=0),
        "predict_on_batch": model.predict_on_batch,
        "call": lambda b: np.asarray(model(b, training=False)),
        "engine's compiled call": ours.predict_batch,
    }
    np.asarray(model(x[:2], training=False))  # start TensorFlow's runtime outside the clocks
    result = {}
    for name, call in calls.items():
        # One cold pass each, tracing included: a run predicts each round once.
        started = time.perf_counter()
        for start in range(0, len(x), KERAS_CALL_BATCH):
            call(x[start:start + KERAS_CALL_BATCH])
        result[name] = time.perf_counter() - started
    return result


SCENARIOS = {
    "engine": scenario_engine,
    "naive": scenario_naive,
    "limit": scenario_limit,
    "keras_calls": scenario_keras_calls,
}


def run_scenario(name: str, data: Path, manifest_path: Path) -> dict:
    """Run one scenario in a child process; its measurements plus its peak RSS."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-m", "devkit.bench", "--scenario", name, "--data", str(data), "--manifest", str(manifest_path)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"scenario {name} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict]) -> list[str]:
    """The table and the target ratios, as printed lines."""
    engine, naive, limit, big = (results[k] for k in ("engine", "naive", "limit", "engine_20x"))
    calls = results["keras_calls"]
    lines = [
        f"{'scenario':<15} {'seconds':>8} {'peak RSS MiB':>13} {'job growth MiB':>15}",
        *(f"{k:<15} {v['seconds']:>8.2f} {v['peak_rss_mb']:>13.0f} {v['growth_mb']:>15.0f}"
          for k, v in results.items() if k != "keras_calls"),
        "",
        f"Keras MLP, one cold pass of {LIVE_ROWS} rows in batches of {KERAS_CALL_BATCH}: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in calls.items() if k not in {"peak_rss_mb", "growth_mb"}),
        "(job growth: peak RSS during the scenario minus RSS once every module was imported)",
        "",
        _ratio("engine time / limit time", engine["seconds"] / limit["seconds"], "<=", 1.2),
        _ratio("naive time / engine time", naive["seconds"] / engine["seconds"], ">=", 1.5),
        _ratio("engine RSS / naive RSS", engine["peak_rss_mb"] / naive["peak_rss_mb"], "<=", 0.7),
        _ratio("20x-rows RSS / live RSS", big["peak_rss_mb"] / engine["peak_rss_mb"], "<=", 1.15),
        "",
        "Not targets, to show where memory goes:",
        _ratio("engine / naive growth", engine["growth_mb"] / naive["growth_mb"], "<=", 0.7),
        _ratio("same, without Keras", results["engine_nokeras"]["growth_mb"]
               / results["naive_nokeras"]["growth_mb"], "<=", 0.7),
        _ratio("same, RSS without Keras", results["engine_nokeras"]["peak_rss_mb"]
               / results["naive_nokeras"]["peak_rss_mb"], "<=", 0.7),
    ]
    return lines


def _ratio(label: str, value: float, op: str, target: float) -> str:
    met = value <= target if op == "<=" else value >= target
    return f"{label:<26} {value:6.2f}  (target {op} {target}: {'met' if met else 'NOT met'})"


def main(argv: list[str] | None = None) -> int:
    """Prepare the data, run every scenario in its own process and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m devkit.bench")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--manifest", type=Path)
    args = parser.parse_args(argv)
    if args.scenario:
        _import_everything()
        process_peak_before = _vm_kib("VmHWM")
        _reset_peak_rss()
        baseline = _vm_kib("VmRSS")
        result = SCENARIOS[args.scenario](args.data, args.manifest)
        result["growth_mb"] = (_vm_kib("VmHWM") - baseline) / 1024
        result["peak_rss_mb"] = max(process_peak_before, _vm_kib("VmHWM")) / 1024
        print(json.dumps(result))  # noqa: T201 - the parent reads this line
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepare(WORK)
    # Writing the 20x round leaves hundreds of MB for the kernel to flush; let it
    # finish before the clocks start, so that no scenario pays for it.
    os.sync()
    live, all_models = WORK / "live", WORK / "models" / "models.json"
    no_keras = WORK / "models" / "models-no-keras.json"
    plan = [("engine", "engine", live, all_models), ("naive", "naive", live, all_models),
            ("limit", "limit", live, all_models), ("engine_20x", "engine", WORK / "live20x", all_models),
            ("engine_nokeras", "engine", live, no_keras), ("naive_nokeras", "naive", live, no_keras),
            ("keras_calls", "keras_calls", live, all_models)]
    results = {}
    for label, scenario, data, manifest in plan:
        log.info("running %s ...", label)
        results[label] = run_scenario(scenario, data, manifest)
    print("\n".join(report(results)))  # noqa: T201 - the benchmark's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
