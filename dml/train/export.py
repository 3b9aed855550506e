"""The exported model: safetensors weights plus a JSON card, written and read with checks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from safetensors.torch import load_file

from dml.config import ModelConfig
from dml.context import BuildContext
from dml.errors import IntegrityError
from dml.io import atomic_path, sha256_file
from dml.models import EmbeddingModel, build_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"


def export_model(
    model: EmbeddingModel, model_cfg: ModelConfig, out_dir: str | os.PathLike[str], *,
    context: BuildContext | None = None, **card: Any
) -> Path:
    """Write ``out_dir/{model.safetensors, model.json}`` as one atomic folder swap.

    The card holds the model config and the build context (the sizes its heads were built
    with), so that :func:`load_model` rebuilds the same modules.
    """
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir, directory=True) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        payload = {
            "model": model_cfg.model_dump(mode="json") | {"weights": None},
            "embed_dim": model.embed_dim,
            "context": (context or BuildContext()).values(),
            "sha256": sha256_file(tmp / WEIGHTS_FILE),
            **card,
        }
        (tmp / CARD_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return out_dir


def read_card(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON card of an exported model."""
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise IntegrityError(f"{path} is missing: {model_dir} is not an exported model")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise IntegrityError(f"{path} is not valid JSON: {err}") from None


def load_model(model_dir: str | os.PathLike[str]) -> tuple[EmbeddingModel, dict[str, Any]]:
    """Rebuild an exported model; a tampered or truncated weights file is refused."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file() or sha256_file(weights) != card.get("sha256"):
        raise IntegrityError(f"{weights} does not match the checksum in {model_dir / CARD_FILE}")
    model = build_model(ModelConfig.model_validate(card["model"]),
                        BuildContext(**card.get("context", {})))
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as err:  # noqa: BLE001 - shape mismatch or parse failure
        raise IntegrityError(f"{weights} does not fit its model card: {err}") from None
    model.eval()
    return model, card
