"""``dvc`` as ``dml run`` runs it: the same CLI, with ``dvc.lock`` read and written by libyaml.

After every stage DVC rewrites ``dvc.lock``: it parses the whole file with ruamel's
comment-preserving YAML parser, sets the stage's entry and dumps the whole file again with
ruamel's emitter, both pure Python. On the demo's lock (one entry per stage, some 5,000 lines)
that costs about two seconds after each of its 75 stages, more than many stages' own work.
``dvc.lock`` is machine-written and holds no comments to preserve, so here it is read and
written with PyYAML's C loader and dumper (libyaml): the same data, in the same block style
(keys in DVC's order, sequences flush with their key, empty values for nulls); only long
commands may wrap at other places than ruamel wraps them, which YAML reads back the same.
Every other file (``dvc.yaml``, ``params.yaml``) keeps DVC's own handling.

Run as ``python -m dml.pipeline.dvc_fast repro ...`` (``dml run -- dvc ...`` does). Where PyYAML was
built without libyaml, this is plain ``dvc``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import yaml

LOCK_FILE = "dvc.lock"


class LockDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """DVC's lock-file style: ordered mappings in their order, nulls as empty values."""


LockDumper.add_representer(type(None), lambda d, _: d.represent_scalar("tag:yaml.org,2002:null", ""))
LockDumper.add_representer(collections.OrderedDict, lambda d, v: d.represent_dict(v.items()))


def load_lock(text: str, path: Any = None) -> Any:
    """``dvc.lock``'s data (a mapping), parsed by libyaml."""
    return yaml.load(text, Loader=yaml.CSafeLoader) or {}


def dump_lock(data: Any, stream: TextIO) -> None:
    """Write ``data`` to ``stream`` in the lock-file style, with libyaml."""
    yaml.dump(data, stream, Dumper=LockDumper, default_flow_style=False, sort_keys=False,
              allow_unicode=True)


def install() -> None:
    """Route DVC's read-modify-write of ``dvc.lock`` through :func:`load_lock` and
    :func:`dump_lock` (nothing changes where libyaml is missing)."""
    if not hasattr(yaml, "CSafeLoader") or not hasattr(yaml, "CSafeDumper"):
        return
    import dvc.dvcfile
    from dvc.utils.serialize import _common, _yaml

    @contextlib.contextmanager
    def modify_yaml(path: Any, fs: Any = None) -> Iterator[Any]:
        if os.path.basename(os.fspath(path)) == LOCK_FILE:
            parser, dumper = load_lock, dump_lock
        else:
            parser, dumper = _yaml.parse_yaml_for_update, _yaml._dump
        with _common._modify_data(path, parser, dumper, fs=fs) as data:
            yield data

    dvc.dvcfile.modify_yaml = modify_yaml


def main(argv: list[str] | None = None) -> int:
    """The ``dvc`` command line with :func:`install` applied."""
    install()
    from dvc.cli import main as dvc_main

    return dvc_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
