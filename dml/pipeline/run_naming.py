"""How runs are named: by a hash of everything that determines them, so that only work of the
same inputs and code is ever resumed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from dml.io import sha256_file, source_fingerprint

if TYPE_CHECKING:
    from dml.config import RunSpec
    from dml.train.training_data import DataSpec


def inputs_hash(payload: dict[str, Any], data: Any) -> str:
    """12 hex digits over ``payload``, the data files' contents and the package source."""
    full = {
        **payload,
        "data": dataclasses.asdict(data),
        "data_sha256": {"manifest": sha256_file(data.manifest), "splits": sha256_file(data.splits)},
        "code": source_fingerprint(),
    }
    return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:12]



def run_name(spec: RunSpec, data: DataSpec, epochs: int) -> str:
    """``<experiment>-<hash>``: equal inputs resume the same run, changed inputs start anew."""
    return f"{spec.experiment}-{inputs_hash({'spec': spec.model_dump(mode='json'), 'epochs': epochs}, data)}"
