"""What every pipeline stage script shares: its arguments and its error handling."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from dml.errors import DmlError


def hand_over() -> None:
    """Run this stage script in the warm interpreter, when one serves (``$DML_WARM_SOCKET``,
    set by ``dml run``), and exit with its status; otherwise return and run here.

    Call it before the script's other imports: that is the time it saves (see dml.pipeline.warm).
    """
    from dml.pipeline.warm import CHILD_ENV, SOCKET_ENV, request_run

    path = os.environ.get(SOCKET_ENV)
    if not path or os.environ.get(CHILD_ENV):
        return
    status = request_run(path, list(sys.argv))
    if status is not None:
        sys.stdout.flush()
        os._exit(status)


def print_notices(notices: list[str]) -> None:
    """One line per notice: what a stage adapted or what a user should know, never noise."""
    for notice in notices:
        print(f"notice: {notice}", flush=True)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; user errors print one clear message (no traceback) and exit 2, Ctrl-C
    prints one line and exits 130."""
    from dml.errors import Interrupted

    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; run it again to resume", file=sys.stderr)
        raise SystemExit(Interrupted.exit_status) from None
    except DmlError as err:
        print(f"{'' if isinstance(err, Interrupted) else 'error: '}{err}", file=sys.stderr)
        raise SystemExit(getattr(err, "exit_status", 2)) from None


def stage_parser(
    description: str | None, *, data: bool = True, experiment: bool = False, bound: bool = False,
    seed: bool = False,
) -> argparse.ArgumentParser:
    """Arguments the stages share: params.yaml, the experiment, and its data: the manifest and
    splits (``data``), or the tune stage's output that names them (``bound``: ``--tuned``);
    ``seed``: the run's seed (``--seed``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    if data:
        parser.add_argument("--manifest", required=True, help="the dataset's manifest.parquet")
        parser.add_argument("--splits", required=True, help="the dataset's splits.parquet")
    if bound:
        parser.add_argument("--tuned", required=True,
                            help="the tune stage's output: tuned values and the experiment's data files")
    if experiment:
        parser.add_argument("--experiment", required=True)
    if seed:
        parser.add_argument("--seed", type=int, required=True, help="the run's seed (train.seed)")
    return parser


def data_binding(manifest: str, splits: str) -> dict[str, str]:
    """What the tune stage records of an experiment's data: the files and their SHA-256, so
    that the per-seed stages read the same files and re-run when they change."""
    from dml.io import sha256_file

    return {"manifest": manifest, "splits": splits,
            "manifest_sha256": sha256_file(manifest), "splits_sha256": sha256_file(splits)}


def read_tuned(path: str) -> dict:
    """The tune stage's output; a missing file or key is an error naming it."""
    import json

    from dml.errors import DataError

    try:
        with open(path) as handle:
            tuned = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the tune stage's output ({err})") from None
    for key in ("overrides", "data"):
        if key not in tuned:
            raise DataError(f"{path}: no {key!r}; run the tune stage again (dvc repro)")
    return tuned
