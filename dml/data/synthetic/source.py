"""The synthetic dataset as a data source, the ingest's view of it: options are
:func:`~dml.data.synthetic.generator.generate`'s, and ``root``: the path DVC watches for the
dataset (dvc.yaml makes every dataset's ``options.root`` a dependency of its ingest), here this
package itself; nothing is read from it.

``dml.data.sources`` registers :func:`synthetic_source` as the source ``synthetic``; this module
does not import the registry, which imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from dml.data.manifest import ManifestInfo
from dml.data.synthetic.generator import check_options, generate
from dml.errors import ConfigError


class SyntheticSource:
    """Generates the table once, on first use, and yields its rows as records."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._generated: tuple[pa.Table, ManifestInfo] | None = None

    def _table(self) -> tuple[pa.Table, ManifestInfo]:
        if self._generated is None:
            self._generated = generate(**self._options)
        return self._generated

    def records(self) -> Iterator[dict[str, Any]]:
        table, _ = self._table()
        for batch in table.to_batches(max_chunksize=1024):
            yield from batch.to_pylist()

    def info(self) -> ManifestInfo:
        return self._table()[1]


def synthetic_source(root: str | None = None, **options: Any) -> SyntheticSource:
    """Source of :func:`~dml.data.synthetic.generator.generate` with these options (checked
    now); ``root`` must name an existing path when given."""
    if root is not None and not Path(root).exists():
        raise ConfigError(f"datasets.<name>.options.root: {root} does not exist (the synthetic datasets name "
                          "their generator, dml/data/synthetic)")
    bound = inspect.signature(generate).bind(**options)
    bound.apply_defaults()
    opts = dict(bound.arguments)
    domains = opts["domains"]
    opts["domains"] = (domains,) if isinstance(domains, str) else tuple(domains)
    check_options(*(opts[k] for k in _CHECKED))
    return SyntheticSource(**opts)


# The registry validates option names against this signature: generate's own, and root.
_GENERATE = inspect.signature(generate)
synthetic_source.__signature__ = _GENERATE.replace(  # type: ignore[attr-defined]
    parameters=[inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
                *_GENERATE.parameters.values()],
    return_annotation=SyntheticSource,
)
_CHECKED = ("image_size", "families", "types_per_family", "classes_per_type", "images_per_class",
            "scenes", "view", "domains")
