"""Where scratch lives and how we join a Ray cluster (local by default, RAY_ADDRESS if set)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SCRATCH_ENV = "DML_SCRATCH"


def scratch_dir() -> Path:
    """Ignored working space (Ray temp files, run folders): $DML_SCRATCH or ./.scratch."""
    path = Path(os.environ.get(SCRATCH_ENV) or ".scratch").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def storage_dir(configured: str | None) -> Path:
    """Absolute folder for Ray run storage (checkpoints): configured, or scratch/ray_results."""
    path = Path(configured).resolve() if configured else scratch_dir() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def available_cpus() -> int:
    """CPUs this process may use (respects affinity masks in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Connect to $RAY_ADDRESS, or start a local Ray instance with its files under scratch."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        temp = scratch_dir() / "ray"
        ray.init(
            num_cpus=available_cpus(),
            include_dashboard=False,
            _temp_dir=str(temp),
            log_to_driver=True,
        )
    try:
        yield
    finally:
        ray.shutdown()
