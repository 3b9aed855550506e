"""The embedded default dataset: small images of shapes that carry every annotation the five
methods need, drawn deterministically from a seed.

One module per job, each importing only those above it:

- ``catalogue``: the scales, attributes and fine classes (outline, hue, pattern, aspect),
- ``shapes``: the outlines' geometry and how one is placed in an image,
- ``canvas``: drawing primitives (background, clutter, masks, textures, PNG encoding),
- ``render``: what a photo, a sketch and a scene show, and the order of their random draws,
- ``generator``: the options, the random streams and the manifest table (``generate``),
- ``source``: the ingest's source ``synthetic`` (registered by ``dml.data.sources``).

Import the names from their module (``from dml.data.synthetic.generator import generate``);
this package imports nothing. Its folder is what DVC watches for the synthetic datasets
(``options.root`` in params.yaml), so an edit of any of these modules re-runs their ingest.
"""
