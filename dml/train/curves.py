"""Training curves as DVC plots, written with dvclive from a run's per-epoch history."""

from __future__ import annotations

import os

from dvclive import Live

from dml.io import atomic_path

CURVE_KEYS = ("loss", "images_per_s", "val_map@r", "val_recall@1")


def write_curves(folder: str | os.PathLike[str], history: list[dict[str, float]]) -> None:
    """Write one dvclive step per epoch into ``folder`` (replaced whole, atomically)."""
    with atomic_path(folder, directory=True) as tmp:
        live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=None, report=None)
        for metrics in history:
            for key in CURVE_KEYS:
                if key in metrics:
                    live.log_metric(key.replace("@", "_at_"), float(metrics[key]))
            live.next_step()
        live.end()
