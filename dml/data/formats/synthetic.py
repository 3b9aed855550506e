"""The embedded synthetic dataset as a source ("synthetic"); options are ``generate``'s."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


@FORMATS.register("synthetic")
def synthetic_source(
    *,
    seed: int = 0,
    image_size: int = 32,
    families: int = 4,
    types_per_family: int = 3,
    classes_per_type: int = 4,
    images_per_class: int = 50,
    scenes: int = 600,
    view: str = "objects",
    domains: Sequence[str] = ("photo",),
) -> SyntheticSource:
    """Source of :func:`dml.data.synthetic.generate` with these options (checked now)."""
    domains = (domains,) if isinstance(domains, str) else tuple(domains)
    synthetic.check_options(image_size, families, types_per_family, classes_per_type,
                            images_per_class, scenes, view, domains)
    return SyntheticSource(
        seed=seed,
        image_size=image_size,
        families=families,
        types_per_family=types_per_family,
        classes_per_type=classes_per_type,
        images_per_class=images_per_class,
        scenes=scenes,
        view=view,
        domains=domains,
    )
