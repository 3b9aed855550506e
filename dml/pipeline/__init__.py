"""The pipeline's runtime, apart from the library: scratch folders, the Ray cluster a stage joins,
run naming, the warm interpreter and the ``dml run`` supervisor, DVC's faster lock files, stage
code fingerprints and what every stage script shares.

Library users (``import dml.losses``, ``dml.evaluate``, ``dml.train``) never import DVC or the
fork server; only stage scripts and ``dml run`` do.
"""
