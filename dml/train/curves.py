"""Training curves as DVC plots, written with dvclive from a run's per-epoch history."""

from __future__ import annotations

import os

from dml.io import atomic_path


def curve_name(key: str) -> str:
    """The dvclive name of history key ``key``: flat (dvclive nests names at ``/``, and
    ``loss`` beside ``loss/deviance`` cannot be both a value and a group), ``@`` spelled out:
    ``loss/deviance`` -> ``loss_deviance``, ``val_map@r`` -> ``val_map_at_r``."""
    return key.replace("@", "_at_").replace("/", "_")


def is_curve(key: str) -> bool:
    """The per-epoch values worth a plot: the loss and its terms, throughput, validation."""
    return key in ("loss", "images_per_s") or key.startswith(("loss/", "val_"))


def write_curves(folder: str | os.PathLike[str], history: list[dict[str, float]]) -> None:
    """Write one dvclive step per epoch into ``folder`` (replaced whole, atomically). An
    untrained reference has no epochs: its folder holds an empty summary and no curve."""
    from dvclive import Live  # imported here: readers of curve names need not pay for it

    with atomic_path(folder, directory=True) as tmp:
        live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=None, report=None)
        for metrics in history:
            for key, value in metrics.items():
                if is_curve(key):
                    live.log_metric(curve_name(key), float(value))
            live.next_step()
        live.end()
        (tmp / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        if not (tmp / "metrics.json").exists():
            (tmp / "metrics.json").write_text("{}\n")
