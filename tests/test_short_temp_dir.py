"""Ray's Unix sockets live in a short folder of the temp dir, whatever the checkout's path:
removed when the block ends, and a folder whose process was killed is removed by the next."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from dml.pipeline.scratch import OWNER_FILE, SHORT_TEMP_LIMIT, short_temp_dir


def test_the_folder_is_short_and_gone_after_the_block(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with short_temp_dir("dml-ray-") as folder:
        assert folder.parent == (tmp_path if len(str(tmp_path)) <= SHORT_TEMP_LIMIT else Path("/tmp"))
        assert folder.name.startswith("dml-ray-") and folder.is_dir()
        (folder / "sockets").mkdir()
    assert not folder.exists()


def test_a_long_temp_dir_gives_way_to_tmp(tmp_path, monkeypatch):
    long = tmp_path / ("x" * 80)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    with short_temp_dir("dml-test-") as folder:
        assert folder.parent == Path("/tmp") and len(str(folder)) < 40
    assert not folder.exists()


def test_a_killed_owners_folder_is_removed_and_a_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    abandoned = Path(tempfile.mkdtemp(prefix="dml-test-", dir="/tmp"))
    (abandoned / OWNER_FILE).write_text(dead.stdout.strip())
    live = Path(tempfile.mkdtemp(prefix="dml-test-", dir="/tmp"))
    (live / OWNER_FILE).write_text("1")  # init: alive
    foreign = Path(tempfile.mkdtemp(prefix="dml-test-", dir="/tmp"))  # no owner file: not ours
    try:
        with short_temp_dir("dml-test-"):
            assert not abandoned.exists()
            assert live.exists() and foreign.exists()
    finally:
        for folder in (abandoned, live, foreign):
            subprocess.run(["rm", "-rf", str(folder)], check=True)
