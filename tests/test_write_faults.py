"""Crashes while writing leave the previous file loadable; damaged or unsafe files are refused.

A real SIGKILL in the middle of an atomic write, then fault injection (half a file, then an
error) into the checkpoint and embeddings writers (the model export and the faiss index have
theirs in train/test_export.py and test_index.py).
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dml.embed import read_embeddings, write_embeddings
from dml.errors import DataError, IntegrityError
from dml.io import atomic_path, exchange_paths
from dml.train.checkpoints import CHECKPOINT_FILE, load_checkpoint, save_checkpoint


def half_then_fail(*args, **kwargs):
    """Fault injection: write a few bytes to the target (a path among the arguments), then crash."""
    target = next(a for a in (*args, *kwargs.values()) if isinstance(a, (str, Path)))
    Path(target).write_bytes(b"partial")
    raise OSError("disk full")


def test_sigkill_during_an_atomic_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    script = textwrap.dedent(f"""
        import sys, time
        from dml.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * 1_000_000)
            print("writing", flush=True)
            time.sleep(60)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait(timeout=10)
    assert target.read_bytes() == b"previous"


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"epoch": 0, "w": torch.ones(3)})
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"epoch": 1, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]


@pytest.mark.parametrize("kept", [0.5, 0.0], ids=["half", "empty"])
def test_truncated_checkpoint_is_refused_by_name(tmp_path, kept):
    """An empty file (a copy caught before its first byte) raises EOFError with no message."""
    save_checkpoint(tmp_path, {"epoch": 0, "w": torch.ones(1000)})
    data = (tmp_path / CHECKPOINT_FILE).read_bytes()
    (tmp_path / CHECKPOINT_FILE).write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(IntegrityError, match=rf"checkpoint .*{CHECKPOINT_FILE} is refused"):
        load_checkpoint(tmp_path)


class RunsCode:
    """Unpickling this calls Path.touch: a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    with open(tmp_path / CHECKPOINT_FILE, "wb") as handle:
        torch.save({"epoch": 0, "payload": RunsCode(marker)}, handle, pickle_module=pickle)
    with pytest.raises(IntegrityError, match="holds more than tensors and plain values"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def embeddings(seed: int) -> tuple[dict, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((6, 4)).astype(np.float32)
    return {"image_id": [f"i{i}" for i in range(6)], "label": [0, 0, 1, 1, 2, 2]}, x


def test_failed_embeddings_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "e.parquet"
    write_embeddings(path, *embeddings(0), model_hash="first")
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_embeddings(path, *embeddings(1), model_hash="second")
    monkeypatch.undo()
    _, vectors, meta = read_embeddings(path)
    assert meta["model_sha256"] == "first"
    np.testing.assert_array_equal(vectors, embeddings(0)[1])
    assert [p.name for p in tmp_path.iterdir()] == ["e.parquet"]


def test_truncated_embeddings_are_refused_by_name(tmp_path):
    path = tmp_path / "e.parquet"
    write_embeddings(path, *embeddings(0), model_hash="x")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"e\.parquet is not a readable parquet file"):
        read_embeddings(path)


def test_folder_swap_is_one_atomic_exchange_on_linux(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "f").write_text("a"), (b / "f").write_text("b")
    swapped = exchange_paths(a, b)
    assert swapped == sys.platform.startswith("linux"), "renameat2(RENAME_EXCHANGE) expected on Linux"
    expected = ("b", "a") if swapped else ("a", "b")
    assert ((a / "f").read_text(), (b / "f").read_text()) == expected


def test_folder_output_is_replaced_whole(tmp_path):
    target = tmp_path / "model"
    for version in ("1", "2"):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "weights").write_text(version)
    assert (target / "weights").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_outputs_get_the_permissions_of_a_file_written_in_place(tmp_path):
    previous = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        with atomic_path(tmp_path / "folder", directory=True) as tmp:
            (tmp / "x").write_text("x")
        with atomic_path(tmp_path / "folder", directory=True) as tmp:  # replacing the folder
            (tmp / "y").write_text("y")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["y"]
