"""Data: the manifest contract, the embedded synthetic dataset, source readers, splits,
torch datasets, samplers and transforms.

Import the submodules directly (``from dml.data.manifest import read_manifest``); this package
imports nothing so that reading a manifest never pays for importing torch.
"""
