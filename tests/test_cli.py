"""`python -m shared predict` on local files: CSVs, summary, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from devkit.example_models import write_onnx_linear
from devkit.synthetic import SyntheticRound
from shared.cli import main
from tests.support import assert_numerai_accepts

REPO = Path(__file__).resolve().parent.parent


def predict(data: Path, manifest: Path, out: Path, *options: str) -> int:
    """`python -m shared predict`, in this process; its exit code."""
    return main(
        ["predict", "--data", str(data), "--manifest", str(manifest), "--out", str(out), *options]
    )


def test_predict_writes_a_valid_csv_per_model_and_a_summary(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = predict(small_round.directory, example_models / "models.json", out, "--batch-rows", "97")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 503 and summary["batch_rows"] == 97
    assert summary["peak_rss_mb"] > 0 and summary["seconds"] > 0
    names = [m["name"] for m in summary["models"]]
    assert names == ["demo_catboost", "demo_lightgbm", "demo_onnx", "demo_upload"]
    for name in names:
        csv = pd.read_csv(out / f"{name}.csv")
        assert list(csv.columns) == ["id", "prediction"]
        assert_numerai_accepts(csv, small_round.ids)


def test_a_failed_model_gives_exit_code_1_and_keeps_what_was_computed(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(example_models, models)
    manifest = json.loads((models / "models.json").read_text())
    manifest["models"][1]["file"] = "missing.txt"
    write_onnx_linear(
        models / "steep.onnx", np.full(len(small_round.feature_sets["small"]), 10.0), 0.0
    )
    manifest["models"][2].update(file="steep.onnx", output="raw")  # outputs far outside [0, 1]
    (models / "models.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    code = predict(small_round.directory, models / "models.json", out)
    assert code == 1
    summary = {m["name"]: m for m in json.loads((out / "summary.json").read_text())["models"]}
    assert (
        summary["demo_lightgbm"]["error"]
        == "model 'demo_lightgbm': model file 'missing.txt' does not exist"
    )
    assert summary["demo_onnx"]["csv"] == "demo_onnx.rejected.csv"
    assert (out / "demo_onnx.rejected.csv").exists() and not (out / "demo_onnx.csv").exists()
    assert summary["demo_catboost"]["ok"] and (out / "demo_catboost.csv").exists()


def test_bad_input_exits_2_with_the_reason(
    small_round: SyntheticRound, tmp_path: Path, caplog
) -> None:
    (tmp_path / "models.json").write_text('{"models": [{"name": "x"}]}')
    code = predict(small_round.directory, tmp_path / "models.json", tmp_path / "out")
    assert code == 2
    assert "model #1 ('x'): field 'file': Field required" in caplog.text


def test_the_module_runs_as_a_program(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared",
            "predict",
            "--data",
            str(small_round.directory),
            "--manifest",
            str(example_models / "models.json"),
            "--out",
            str(tmp_path),
            "--models",
            "demo_onnx",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_onnx.csv", "summary.json"]


def test_predict_takes_relative_paths(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    shutil.copytree(small_round.directory, tmp_path / "round")
    shutil.copytree(example_models, tmp_path / "models")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared",
            "predict",
            "--data",
            "round",
            "--manifest",
            "models/models.json",
            "--out",
            "out",
            "--models",
            "demo_lightgbm",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "demo_lightgbm.csv").exists()


def test_predict_refuses_an_entry_of_another_data_version(
    small_round: SyntheticRound, example_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(example_models, models)
    manifest = json.loads((models / "models.json").read_text())
    manifest["models"][1]["data_version"] = "v5.2"
    (models / "models.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    code = predict(small_round.directory, models / "models.json", out)
    assert code == 1
    summary = {m["name"]: m for m in json.loads((out / "summary.json").read_text())["models"]}
    assert not summary["demo_lightgbm"]["ok"] and not (out / "demo_lightgbm.csv").exists()
    assert summary["demo_lightgbm"]["error"] == (
        "model 'demo_lightgbm': its data_version is v5.2, and --data holds v5.3 (--data-version); "
        "predict it from v5.2's files with --data-version v5.2, or with --round-from-numerai, "
        "which downloads each version the models use"
    )
    assert summary["demo_catboost"]["ok"]
