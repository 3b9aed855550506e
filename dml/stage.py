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

    Call it before the script's other imports: that is the time it saves (see dml.warm).
    """
    from dml.warm import CHILD_ENV, SOCKET_ENV, request_run

    path = os.environ.get(SOCKET_ENV)
    if not path or os.environ.get(CHILD_ENV):
        return
    status = request_run(path, list(sys.argv))
    if status is not None:
        sys.stdout.flush()
        os._exit(status)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; user errors print one clear message (no traceback) and exit 2."""
    try:
        main()
    except DmlError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def stage_parser(
    description: str | None, *, data: bool = True, experiment: bool = False
) -> argparse.ArgumentParser:
    """Arguments the stages share: params.yaml, the manifest and splits, the experiment."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    if data:
        parser.add_argument("--manifest", required=True, help="the dataset's manifest.parquet")
        parser.add_argument("--splits", required=True, help="the dataset's splits.parquet")
    if experiment:
        parser.add_argument("--experiment", required=True)
    return parser
