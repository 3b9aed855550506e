"""Data sources (``datasets.<name>.source``): readers of published dataset layouts, one per file,
registered in ``SOURCES`` (and the embedded synthetic dataset's, ``dml.data.synthetic.source``).

A reader is a factory taking keyword options (``datasets.<name>.options`` in params.yaml) and returning
a :class:`Source`. ``dml.data.ingest`` decodes, checks and writes what a source yields.

Record contract (every record of a source has the same keys):

- ``image_id`` (str, unique) and either ``image`` (encoded bytes) or ``path`` (a file to read);
  both may be given, then the bytes win and ``path`` is kept as provenance;
- annotation keys named as manifest columns (``label``, ``label_<scale>``, ``split``, ...);
- optionally ``_origin`` (str): where the record comes from (e.g. ``annotations.csv line 7``),
  quoted in error messages and never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from dml.data.manifest import ManifestInfo
from dml.registry import Registry


@runtime_checkable
class Source(Protocol):
    """What a reader returns: records to ingest plus the manifest metadata."""

    def records(self) -> Iterator[dict[str, Any]]: ...

    def info(self) -> ManifestInfo: ...


SOURCES: Registry[Source] = Registry("data source")
#: How a source names a key of its dataset in a message (``datasets.<name>.options.year``):
#: it does not know the dataset's name, and ingest puts it in.
DATASET_KEY = "datasets.<name>"

# Register the readers (import for their side effect).
from dml.data.sources import (  # noqa: E402,F401
    cars196, coco, cub, dyml, folder, inshop, nuswide, sketchy, sop, tuberlin,
)
# The embedded dataset's source lives with its generator and leaves registering to this package:
# importing the registry there would make an import cycle.
from dml.data.synthetic.source import synthetic_source  # noqa: E402

SOURCES.register("synthetic")(synthetic_source)

__all__ = ["SOURCES", "Source"]
