"""The embedded synthetic dataset as a source ("synthetic"); options are ``generate``'s."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dml.data import synthetic
from dml.data.formats import FORMATS
from dml.data.manifest import ManifestInfo


class SyntheticSource:
    """Generates the table once, on first use, and yields its rows as records."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._generated: tuple[pa.Table, ManifestInfo] | None = None

    def _table(self) -> tuple[pa.Table, ManifestInfo]:
        if self._generated is None:
            self._generated = synthetic.generate(**self._options)
        return self._generated

    def records(self) -> Iterator[dict[str, Any]]:
        table, _ = self._table()
        for batch in table.to_batches(max_chunksize=1024):
            yield from batch.to_pylist()

    def info(self) -> ManifestInfo:
        return self._table()[1]


def synthetic_source(**options: Any) -> SyntheticSource:
    """Source of :func:`dml.data.synthetic.generate` with these options (checked now)."""
    bound = inspect.signature(synthetic.generate).bind(**options)
    bound.apply_defaults()
    opts = dict(bound.arguments)
    domains = opts["domains"]
    opts["domains"] = (domains,) if isinstance(domains, str) else tuple(domains)
    synthetic.check_options(*(opts[k] for k in _CHECKED))
    return SyntheticSource(**opts)


# The registry validates option names against this signature: it is generate's own.
synthetic_source.__signature__ = inspect.signature(synthetic.generate).replace(  # type: ignore[attr-defined]
    return_annotation=SyntheticSource
)
_CHECKED = ("image_size", "families", "types_per_family", "classes_per_type", "images_per_class",
            "scenes", "view", "domains")
FORMATS.register("synthetic")(synthetic_source)
