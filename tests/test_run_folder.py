"""Work folders: a live run's is never swept, whether the sweep runs in its process or another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.executors.run_folder import LOCK_FILE, remove_stale_folders, run_folder

REPO = Path(__file__).resolve().parent.parent
SWEEP = "import pathlib, sys\nfrom shared.executors.run_folder import remove_stale_folders\nremove_stale_folders(pathlib.Path(sys.argv[1]))"


def test_a_held_folder_survives_sweeps_from_this_process_and_another_and_goes_when_its_run_ends(
    tmp_path: Path,
) -> None:
    root = tmp_path / "rounds"
    with run_folder(root, "run-a") as folder:
        (folder / "live.parquet").write_bytes(b"x")
        subprocess.run([sys.executable, "-c", SWEEP, str(root)], cwd=REPO, check=True)
        remove_stale_folders(root)  # as a second run on another thread of this process would
        assert (folder / "live.parquet").read_bytes() == b"x"
        assert (folder / LOCK_FILE).is_file()
    assert not folder.exists()


def test_a_sweep_removes_unheld_folders_and_leaves_files_and_a_missing_root_alone(
    tmp_path: Path,
) -> None:
    remove_stale_folders(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / LOCK_FILE).touch()
    (tmp_path / "unlocked-older-version" / "workers").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a run's")
    remove_stale_folders(tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []
    assert (tmp_path / "notes.txt").read_text() == "not a run's"
